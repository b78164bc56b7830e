package org.ppml.codec;

import java.io.IOException;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import org.ppml.agent.KeyAgentClient;
import org.ppml.agent.KeyAgentException;
import org.ppml.envelope.CiphertextException;
import org.ppml.envelope.EnvelopeHeader;
import org.ppml.envelope.EnvelopeInputStream;

/**
 * Data keys for the codec, only from the key agent ({@code PPML_KEY_AGENT}), asking the key service
 * named by the configuration ({@code ppml.kms.uri}), never the one a file's header names: a tampered
 * header must not make the agent dial an attacker's server with this session's token.
 *
 * <p>Unwrapped keys are kept in this JVM for {@link #CACHE_NANOS} per (service, key id, wrapped key), so
 * the splits of one file cost one agent round trip, not one each.
 */
final class DataKeys implements EnvelopeInputStream.KeySource {
  static final long CACHE_NANOS = 60_000_000_000L;
  private static final Map<CacheKey, Cached> CACHE = new ConcurrentHashMap<>();

  private record CacheKey(String uri, String keyId, String wrapped) {}

  private record Cached(byte[] key, long expires) {}

  private final String uri;
  private final String source;

  DataKeys(String uri, String source) {
    this.uri = uri;
    this.source = source;
  }

  @Override
  public byte[] dataKey(EnvelopeHeader header) throws IOException {
    if (uri == null || uri.isEmpty()) {
      throw new KeyAgentException("UsageError", "reading " + source + " needs the key service to ask: set "
          + PpmlCodec.KMS_URI + " (spark.hadoop." + PpmlCodec.KMS_URI + ", or .option(\"" + PpmlCodec.KMS_URI
          + "\", URI) on the read); the file's header names " + quoted(header.kms)
          + ", which ppml never dials on its own");
    }
    CacheKey cacheKey = new CacheKey(uri, header.keyId, java.util.HexFormat.of().formatHex(header.wrappedDataKey()));
    long now = System.nanoTime();
    Cached cached = CACHE.get(cacheKey);
    if (cached != null && now - cached.expires < 0) {
      return cached.key.clone();
    }
    byte[] key;
    try {
      key = KeyAgentClient.forThisThread().unwrap(uri, header.keyId, header.wrappedDataKey(), new byte[0]);
    } catch (KeyAgentException e) {
      if ("InvalidCiphertext".equals(e.error())) {
        throw CiphertextException.invalid(source);
      }
      if ("KeyNotFound".equals(e.error())) {
        // An unknown key id is also what a tampered header looks like; say where it was looked up.
        throw new KeyAgentException("KeyNotFound", strip(e) + " (reading " + source + ", whose header names key "
            + quoted(header.keyId) + " of " + quoted(header.kms) + "; " + PpmlCodec.KMS_URI + " is " + quoted(uri) + ")");
      }
      throw new KeyAgentException(e.error(), strip(e) + " (reading " + source + ")");
    }
    if (key.length != 32) {
      throw CiphertextException.invalid(source);
    }
    CACHE.values().removeIf(c -> now - c.expires >= 0);
    CACHE.put(cacheKey, new Cached(key.clone(), now + CACHE_NANOS));
    return key;
  }

  /** A fresh data key under {@code keyId} for a new file. */
  static KeyAgentClient.GeneratedKey generate(String uri, String keyId) throws IOException {
    return KeyAgentClient.forThisThread().generate(uri, keyId, new byte[0]);
  }

  /** What the header's informational kms field holds: the URI without credentials or query, as Python writes it. */
  static String informational(String uri) {
    if (uri.startsWith("local:")) {
      String path = uri.substring("local:".length());
      if (path.startsWith("//")) {
        path = path.substring(2);
      }
      return path.isEmpty() ? "local:" : "local:" + Path.of(path).toAbsolutePath().normalize();
    }
    try {
      java.net.URI parsed = new java.net.URI(uri);
      String host = parsed.getHost();
      if (parsed.getScheme() == null || host == null) {
        return "";
      }
      return parsed.getScheme() + "://" + host + (parsed.getPort() >= 0 ? ":" + parsed.getPort() : "");
    } catch (java.net.URISyntaxException e) {
      return "";
    }
  }

  private static String strip(KeyAgentException e) {
    String prefix = "ppml: " + e.error() + ": ";
    String message = e.getMessage();
    return message.startsWith(prefix) ? message.substring(prefix.length()) : message;
  }

  private static String quoted(String value) {
    return "'" + value + "'";
  }

  static void wipe(byte[] key) {
    Arrays.fill(key, (byte) 0);
  }
}
