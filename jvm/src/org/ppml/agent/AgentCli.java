package org.ppml.agent;

import java.util.Arrays;
import java.util.HexFormat;

/**
 * A tiny command line over {@link KeyAgentClient}, for tests and for checking a deployment:
 * {@code java -cp ppml-jvm.jar:... org.ppml.agent.AgentCli ping | generate KMS KEY_ID | unwrap-check KMS KEY_ID}.
 * It prints no key material: {@code generate} prints the wrapped key's length and whether an unwrap
 * through the agent gives the same key back.
 */
public final class AgentCli {
  private AgentCli() {}

  public static void main(String[] args) throws Exception {
    try (KeyAgentClient client = new KeyAgentClient(KeyAgentClient.agentPath())) {
      switch (args.length == 0 ? "" : args[0]) {
        case "ping" -> System.out.println("tee: " + client.ping());
        case "generate" -> {
          KeyAgentClient.GeneratedKey key = client.generate(args[1], args[2], new byte[0]);
          byte[] again = client.unwrap(args[1], args[2], key.wrapped, new byte[0]);
          System.out.println("wrapped " + key.wrapped.length + " bytes; unwrap matches: " + Arrays.equals(key.key, again));
        }
        case "unwrap" -> {
          byte[] key = client.unwrap(args[1], args[2], HexFormat.of().parseHex(args[3]), new byte[0]);
          System.out.println("unwrapped " + key.length + " bytes");
        }
        default -> {
          System.err.println("usage: AgentCli ping | generate KMS KEY_ID | unwrap KMS KEY_ID WRAPPED_HEX");
          System.exit(2);
        }
      }
    } catch (KeyAgentException e) {
      System.err.println(e.getMessage());
      System.exit(1);
    }
  }
}
