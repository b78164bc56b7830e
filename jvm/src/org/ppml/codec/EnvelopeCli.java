package org.ppml.codec;

import java.io.BufferedInputStream;
import java.io.BufferedOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import org.ppml.agent.KeyAgentClient;
import org.ppml.envelope.EnvelopeHeader;
import org.ppml.envelope.EnvelopeInputStream;
import org.ppml.envelope.EnvelopeOutputStream;

/**
 * The Java envelope reader and writer on the command line, keys through the key agent, for tests and
 * for checking a deployment:
 * {@code java -cp ppml-jvm.jar:SPARK/jars/* org.ppml.codec.EnvelopeCli decrypt KMS IN OUT | encrypt KMS KEY_ID IN OUT [SEGMENT_SIZE]}.
 * {@code decrypt} writes OUT only once the whole input verified (a temporary file beside it is renamed).
 */
public final class EnvelopeCli {
  private EnvelopeCli() {}

  public static void main(String[] args) {
    try {
      switch (args.length == 0 ? "" : args[0]) {
        case "decrypt" -> decrypt(args[1], Path.of(args[2]), Path.of(args[3]));
        case "encrypt" -> encrypt(args[1], args[2], Path.of(args[3]), Path.of(args[4]),
            args.length > 5 ? Integer.parseInt(args[5]) : EnvelopeHeader.DEFAULT_SEGMENT_SIZE);
        default -> {
          System.err.println("usage: EnvelopeCli decrypt KMS IN OUT | encrypt KMS KEY_ID IN OUT [SEGMENT_SIZE]");
          System.exit(2);
        }
      }
    } catch (IOException e) {
      System.err.println(e.getMessage());
      System.exit(1);
    }
  }

  private static void decrypt(String kms, Path in, Path out) throws IOException {
    Path partial = out.resolveSibling(out.getFileName() + ".partial");
    try (InputStream raw = new BufferedInputStream(Files.newInputStream(in), 1 << 16);
         EnvelopeInputStream plain = EnvelopeInputStream.open(raw, new DataKeys(kms, in.toString()), in.toString());
         OutputStream sink = Files.newOutputStream(partial)) {
      plain.transferTo(sink);
    } catch (IOException e) {
      Files.deleteIfExists(partial);
      throw e;
    }
    Files.move(partial, out, java.nio.file.StandardCopyOption.REPLACE_EXISTING);
  }

  private static void encrypt(String kms, String keyId, Path in, Path out, int segmentSize) throws IOException {
    KeyAgentClient.GeneratedKey generated = DataKeys.generate(kms, keyId);
    EnvelopeHeader header = new EnvelopeHeader(DataKeys.informational(kms), keyId, generated.wrapped, segmentSize,
        new byte[0]);
    try (InputStream source = Files.newInputStream(in);
         EnvelopeOutputStream sink = new EnvelopeOutputStream(
             new BufferedOutputStream(Files.newOutputStream(out), 1 << 16), header, generated.key)) {
      source.transferTo(sink);
    } finally {
      DataKeys.wipe(generated.key);
    }
  }
}
