package org.ppml.parquet;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.security.SecureRandom;
import java.util.Arrays;
import java.util.Base64;
import java.util.Iterator;
import java.util.Set;
import javax.crypto.AEADBadTagException;
import javax.crypto.Cipher;
import javax.crypto.spec.GCMParameterSpec;
import javax.crypto.spec.SecretKeySpec;
import org.apache.hadoop.conf.Configuration;
import org.apache.parquet.crypto.KeyAccessDeniedException;
import org.apache.parquet.crypto.ParquetCryptoRuntimeException;
import org.apache.parquet.crypto.keytools.KeyToolkit;
import org.apache.parquet.crypto.keytools.KmsClient;
import org.ppml.agent.KeyAgentClient;
import org.ppml.agent.KeyAgentException;

/**
 * parquet-mr's {@code KmsClient} for PME keys wrapped by a ppml KMS, through the key agent: the same
 * key material as ppml's PyArrow client ({@code ppml.tabular.parquet.PpmlKmsClient}), so either reads
 * what the other wrote. A PME key (parquet-mr's KEK, as it double-wraps) is wrapped as
 *
 * <pre>
 *   wrapped = base64(JSON {"v":1,"wdk":base64(KMS-wrapped data key),
 *                          "n":base64(12-byte nonce),"c":base64(AES-256-GCM(data key, PME key))})
 * </pre>
 *
 * with the master key id (UTF-8) as the GCM associated data. The data key comes from the agent's
 * {@code generate} and {@code unwrap}, so a primary key with a release policy releases PME keys
 * only to attested TEEs. Unwrapping is strict: a wrapped key longer than {@link #MAX_WRAPPED}
 * characters, not base64, not that JSON object, with another version, a nonce other than 12 bytes or
 * a ciphertext shorter than a tag is refused as {@code InvalidCiphertext} before the agent is asked.
 *
 * <p>Which KMS: the URI is {@code parquet.encryption.kms.instance.id} of the job's Hadoop
 * configuration, never the {@code kmsInstanceID} that parquet-mr stored in a file's key material.
 * parquet-mr 1.17's {@code FileKeyUnwrapper} takes the configured id when there is one and falls back
 * to the file's otherwise; this client refuses to start without a configured id and refuses an
 * instance id other than the configured one, so an altered file cannot point the agent (and the
 * TEE's attestation token) at another server.
 *
 * <p>Errors are parquet-mr's runtime exceptions with ppml's message ({@code ppml: NAME: ...}, NAME the
 * ppml error class); {@link KeyAccessDeniedException} where the KMS refused the key.
 */
public final class PpmlKmsClient implements KmsClient {
  /** The Hadoop setting that names the KMS (a ppml KMS URI: {@code ppml+https://...}, {@code local:DIR}). */
  public static final String KMS_URI_PROPERTY = KeyToolkit.KMS_INSTANCE_ID_PROPERTY_NAME;
  /** A wrapped key longer than this (characters) is refused unread; ppml's are about 250. */
  public static final int MAX_WRAPPED = 4096;

  private static final ObjectMapper JSON = new ObjectMapper();
  private static final SecureRandom RANDOM = new SecureRandom();
  private static final Set<String> FIELDS = Set.of("v", "wdk", "n", "c");
  private static final Set<String> ACCESS_DENIED = Set.of("PermissionDenied", "TokenRejected", "KeyNotFound",
      "KeyDisabled", "AuthenticationFailed", "AttestationFailed");
  private static final int NONCE_BYTES = 12;
  private static final int TAG_BITS = 128;

  private String kmsUri;

  @Override
  public void initialize(Configuration configuration, String kmsInstanceID, String kmsInstanceURL,
      String accessToken) {
    String configured = configuration.getTrimmed(KMS_URI_PROPERTY);
    if (configured == null || configured.isEmpty() || KmsClient.KMS_INSTANCE_ID_DEFAULT.equals(configured)) {
      throw new ParquetCryptoRuntimeException("ppml: UsageError: no KMS configured for Parquet encryption: set "
          + KMS_URI_PROPERTY + " to the KMS URI (ppml.spark.jvm.native_session_conf(kms_uri) does); "
          + "ppml never uses the KMS a file names");
    }
    if (!configured.equals(kmsInstanceID)) {
      throw new ParquetCryptoRuntimeException("ppml: UsageError: parquet-mr asked for KMS instance "
          + kmsInstanceID + " but " + KMS_URI_PROPERTY + " is " + configured);
    }
    this.kmsUri = configured;
  }

  /** The KMS this client asks (the configured URI). */
  public String kmsUri() {
    return kmsUri;
  }

  @Override
  public String wrapKey(byte[] keyBytes, String masterKeyIdentifier) {
    KeyAgentClient.GeneratedKey dataKey;
    try {
      dataKey = KeyAgentClient.forThisThread().generate(kmsUri, masterKeyIdentifier, new byte[0]);
    } catch (IOException e) {
      throw agentFailure(e, masterKeyIdentifier);
    }
    try {
      byte[] nonce = new byte[NONCE_BYTES];
      RANDOM.nextBytes(nonce);
      byte[] sealed = gcm(Cipher.ENCRYPT_MODE, dataKey.key, nonce, masterKeyIdentifier).doFinal(keyBytes);
      Base64.Encoder b64 = Base64.getEncoder();
      // The JSON Python's json.dumps(separators=(",", ":")) writes: base64 needs no escaping.
      String record = "{\"v\":1,\"wdk\":\"" + b64.encodeToString(dataKey.wrapped) + "\",\"n\":\""
          + b64.encodeToString(nonce) + "\",\"c\":\"" + b64.encodeToString(sealed) + "\"}";
      return b64.encodeToString(record.getBytes(StandardCharsets.US_ASCII));
    } catch (GeneralSecurityException e) {
      throw new ParquetCryptoRuntimeException("ppml: KeyServiceError: AES-GCM is unavailable in this JVM", e);
    } finally {
      Arrays.fill(dataKey.key, (byte) 0);
    }
  }

  @Override
  public byte[] unwrapKey(String wrappedKey, String masterKeyIdentifier) {
    byte[][] parts = parse(wrappedKey, masterKeyIdentifier);
    byte[] dataKey;
    try {
      dataKey = KeyAgentClient.forThisThread().unwrap(kmsUri, masterKeyIdentifier, parts[0], new byte[0]);
    } catch (IOException e) {
      throw agentFailure(e, masterKeyIdentifier);
    }
    try {
      return gcm(Cipher.DECRYPT_MODE, dataKey, parts[1], masterKeyIdentifier).doFinal(parts[2]);
    } catch (AEADBadTagException e) {
      throw invalid(masterKeyIdentifier);
    } catch (GeneralSecurityException e) {
      throw new ParquetCryptoRuntimeException("ppml: InvalidCiphertext: the PME key under master key "
          + masterKeyIdentifier + " does not decrypt", e);
    } finally {
      Arrays.fill(dataKey, (byte) 0);
    }
  }

  /** {wrapped data key, nonce, sealed PME key} from a wrapped key, or InvalidCiphertext. */
  private static byte[][] parse(String wrappedKey, String masterKeyIdentifier) {
    if (wrappedKey == null || wrappedKey.length() > MAX_WRAPPED) {
      throw invalid(masterKeyIdentifier);
    }
    try {
      JsonNode record = JSON.readTree(Base64.getDecoder().decode(wrappedKey));
      if (record == null || !record.isObject() || record.size() != FIELDS.size()) {
        throw invalid(masterKeyIdentifier);
      }
      for (Iterator<String> names = record.fieldNames(); names.hasNext(); ) {
        if (!FIELDS.contains(names.next())) {
          throw invalid(masterKeyIdentifier);
        }
      }
      JsonNode version = record.get("v");
      if (!version.isInt() || version.intValue() != 1) {
        throw invalid(masterKeyIdentifier);
      }
      byte[][] parts = {field(record, "wdk"), field(record, "n"), field(record, "c")};
      if (parts[0].length == 0 || parts[1].length != NONCE_BYTES || parts[2].length < TAG_BITS / 8) {
        throw invalid(masterKeyIdentifier);
      }
      return parts;
    } catch (IOException | IllegalArgumentException e) {
      throw invalid(masterKeyIdentifier);
    }
  }

  private static byte[] field(JsonNode record, String name) {
    JsonNode value = record.get(name);
    if (!value.isTextual()) {
      throw new IllegalArgumentException(name);
    }
    return Base64.getDecoder().decode(value.textValue());
  }

  private static Cipher gcm(int mode, byte[] key, byte[] nonce, String masterKeyIdentifier)
      throws GeneralSecurityException {
    Cipher cipher = Cipher.getInstance("AES/GCM/NoPadding");
    cipher.init(mode, new SecretKeySpec(key, "AES"), new GCMParameterSpec(TAG_BITS, nonce));
    cipher.updateAAD(masterKeyIdentifier.getBytes(StandardCharsets.UTF_8));
    return cipher;
  }

  private static ParquetCryptoRuntimeException invalid(String masterKeyIdentifier) {
    return new ParquetCryptoRuntimeException("ppml: InvalidCiphertext: a PME key wrapped under master key "
        + masterKeyIdentifier + " is malformed or altered (the file is damaged or was tampered with)");
  }

  private ParquetCryptoRuntimeException agentFailure(IOException e, String masterKeyIdentifier) {
    String message = e.getMessage() + " (master key " + masterKeyIdentifier + ", KMS " + kmsUri + ")";
    if (e instanceof KeyAgentException refused && ACCESS_DENIED.contains(refused.error())) {
      return new KeyAccessDeniedException(message, e);
    }
    return new ParquetCryptoRuntimeException(message, e);
  }
}
