package org.ppml.agent;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.Base64;
import java.util.concurrent.ConcurrentHashMap;

/**
 * A connection to the ppml key agent: the attested runtime of this TEE serves data keys on a Unix
 * socket named by {@code PPML_KEY_AGENT} (protocol: docs/key-agent.md). The JVM never holds a KMS
 * credential, an attestation token or the TEE key; it asks the agent, which asks the KMS through
 * the session that attested.
 *
 * <p>One connection per thread ({@link #forThisThread()}), so task threads never wait on each
 * other's round trips. Replies and errors never carry key material in their messages.
 */
public final class KeyAgentClient implements AutoCloseable {
  /** The environment variable naming the agent's socket (a path, not a secret). */
  public static final String AGENT_ENV = "PPML_KEY_AGENT";
  /** Requests and replies longer than this are refused, as the agent does. */
  public static final int MAX_FRAME = 64 << 10;

  private static final ObjectMapper JSON = new ObjectMapper();
  private static final ConcurrentHashMap<Thread, KeyAgentClient> PER_THREAD = new ConcurrentHashMap<>();

  private final Path path;
  private final SocketChannel channel;
  private final ByteBuffer in = ByteBuffer.allocate(MAX_FRAME + 1);

  /** A generated data key: the plaintext key and its KMS-wrapped form. */
  public static final class GeneratedKey {
    public final byte[] key;
    public final byte[] wrapped;

    GeneratedKey(byte[] key, byte[] wrapped) {
      this.key = key;
      this.wrapped = wrapped;
    }
  }

  public KeyAgentClient(Path path) throws IOException {
    this.path = path;
    SocketChannel opened = SocketChannel.open(StandardProtocolFamily.UNIX);
    try {
      opened.connect(UnixDomainSocketAddress.of(path));
    } catch (IOException e) {
      opened.close();
      throw new KeyAgentException("UsageError", "cannot reach the key agent at " + path + ": " + e.getMessage()
          + "; run the job under `ppml submit` or `ppml tee run`, which start the agent");
    }
    this.channel = opened;
    in.limit(0);
  }

  /** The agent named by {@code PPML_KEY_AGENT}, or a clear error saying how to get one. */
  public static Path agentPath() throws KeyAgentException {
    String value = System.getenv(AGENT_ENV);
    if (value == null || value.isEmpty()) {
      throw new KeyAgentException("UsageError", "no key agent: $" + AGENT_ENV + " is not set; run the job under "
          + "`ppml submit` (or `ppml tee run`), which attests and starts the agent");
    }
    return Path.of(value);
  }

  /** This thread's connection to the agent, opened on first use and reopened if it broke. */
  public static KeyAgentClient forThisThread() throws IOException {
    Thread thread = Thread.currentThread();
    KeyAgentClient client = PER_THREAD.get(thread);
    if (client == null || !client.channel.isOpen()) {
      client = new KeyAgentClient(agentPath());
      PER_THREAD.put(thread, client);
      PER_THREAD.keySet().removeIf(t -> !t.isAlive());
    }
    return client;
  }

  public String ping() throws IOException {
    ObjectNode request = JSON.createObjectNode().put("op", "ping");
    return text(request(request), "tee");
  }

  /** A fresh data key under primary key {@code keyId} of the KMS at {@code kms}. */
  public GeneratedKey generate(String kms, String keyId, byte[] aad) throws IOException {
    ObjectNode request = JSON.createObjectNode().put("op", "generate").put("kms", kms).put("key_id", keyId)
        .put("aad", b64(aad));
    JsonNode reply = request(request);
    return new GeneratedKey(unb64(text(reply, "key")), unb64(text(reply, "wrapped")));
  }

  /** The data key that {@code wrapped} holds, if the KMS releases it to this TEE. */
  public byte[] unwrap(String kms, String keyId, byte[] wrapped, byte[] aad) throws IOException {
    ObjectNode request = JSON.createObjectNode().put("op", "unwrap").put("kms", kms).put("key_id", keyId)
        .put("wrapped", b64(wrapped)).put("aad", b64(aad));
    return unb64(text(request(request), "key"));
  }

  private synchronized JsonNode request(ObjectNode request) throws IOException {
    byte[] line = (JSON.writeValueAsString(request) + "\n").getBytes(StandardCharsets.UTF_8);
    if (line.length > MAX_FRAME) {
      throw new KeyAgentException("UsageError", "request longer than " + MAX_FRAME + " bytes");
    }
    ByteBuffer out = ByteBuffer.wrap(line);
    try {
      try {
        while (out.hasRemaining()) {
          channel.write(out);
        }
      } catch (IOException e) {
        // The agent refuses a peer before reading its request; its one reply line says why.
      }
      JsonNode reply = JSON.readTree(readLine());
      if (!reply.path("ok").asBoolean(false)) {
        throw new KeyAgentException(reply.path("error").asText("KeyServiceError"), reply.path("message").asText(""));
      }
      return reply;
    } catch (KeyAgentException e) {
      throw e;
    } catch (IOException e) {
      channel.close();
      throw new KeyAgentException("KeyServiceError", "the key agent at " + path + " failed: " + e.getMessage());
    }
  }

  private byte[] readLine() throws IOException {
    ByteArrayOutputStream line = new ByteArrayOutputStream();
    while (true) {
      while (in.hasRemaining()) {
        byte b = in.get();
        if (b == '\n') {
          return line.toByteArray();
        }
        line.write(b);
        if (line.size() > MAX_FRAME) {
          throw new IOException("reply longer than " + MAX_FRAME + " bytes");
        }
      }
      in.clear();
      int n = channel.read(in);
      in.flip();
      if (n < 0) {
        throw new IOException("the agent closed the connection");
      }
    }
  }

  private static String text(JsonNode reply, String field) throws KeyAgentException {
    JsonNode value = reply.get(field);
    if (value == null || !value.isTextual()) {
      throw new KeyAgentException("KeyServiceError", "the key agent's reply lacks " + field);
    }
    return value.asText();
  }

  private static String b64(byte[] value) {
    return Base64.getEncoder().encodeToString(value == null ? new byte[0] : value);
  }

  private static byte[] unb64(String value) throws KeyAgentException {
    try {
      return Base64.getDecoder().decode(value);
    } catch (IllegalArgumentException e) {
      throw new KeyAgentException("KeyServiceError", "the key agent's reply is not base64");
    }
  }

  @Override
  public void close() throws IOException {
    channel.close();
  }
}
