package org.ppml.envelope;

import java.security.GeneralSecurityException;
import java.security.InvalidAlgorithmParameterException;
import java.security.MessageDigest;
import java.security.SecureRandom;
import java.util.Arrays;
import javax.crypto.Cipher;
import javax.crypto.Mac;
import javax.crypto.spec.GCMParameterSpec;
import javax.crypto.spec.IvParameterSpec;
import javax.crypto.spec.SecretKeySpec;

/**
 * HAZMAT: Tink's AES-GCM-HKDF streaming AEAD, segment by segment (the Java twin of
 * {@code ppml.core._streaming}; use it only through {@link EnvelopeInputStream} and
 * {@link EnvelopeOutputStream}, which bind the header, order the segments and flag the last one).
 *
 * <pre>
 * stream header (H = 1 + 32 + 7 = 40 bytes)
 *   0   1   header length H (0x28)
 *   1  32   salt            random per stream
 *  33   7   nonce prefix    random per stream
 * segment 0   (S - H bytes when not last): AES-256-GCM(k, nonce(0), pt[0:S-H-16])   ‖ tag
 * segment i>0 (S bytes when not last):     AES-256-GCM(k, nonce(i), next S-16 bytes) ‖ tag
 *
 * k        = HKDF-SHA256(ikm=data key, salt=salt, info=associated data, length=32)
 * nonce(i) = nonce prefix (7) ‖ uint32_be(i) ‖ 0x01 if segment i is the last else 0x00
 * </pre>
 */
final class StreamingAead {
  static final int KEY_SIZE = 32;
  static final int NONCE_PREFIX_SIZE = 7;
  static final int TAG_SIZE = 16;
  static final int HEADER_SIZE = 1 + KEY_SIZE + NONCE_PREFIX_SIZE;
  static final long MAX_SEGMENTS = 1L << 32;

  final int segmentSize;
  /** Plaintext bytes of a full segment 0, and of a full later segment. */
  final int firstPlaintext;
  final int plaintext;
  /**
   * Bytes per Cipher.update call. JCE's AES-GCM reaches its AES-NI/CLMUL intrinsics only once the
   * calling methods are compiled by C2, which counts calls: one call per 1 MiB segment stayed
   * interpreted for gigabytes (measured: 40 MB/s after 700 MiB), while 4 KiB calls are fast after a few
   * tens of MiB. Decryption cannot be fed in pieces (JCE buffers GCM ciphertext until doFinal), so
   * {@link #open} decrypts with AES-CTR in pieces and checks the tag by encrypting the plaintext again
   * with AES-GCM in pieces, which yields the same ciphertext and so GCM's tag over it.
   */
  private static final int CHUNK = 4096;

  private final SecretKeySpec key;
  private final byte[] nonce = new byte[12];
  private final Cipher gcm;
  private final Cipher ctr;
  private final byte[] scratch = new byte[CHUNK + 2 * TAG_SIZE];
  private final byte[] streamHeader;

  private StreamingAead(byte[] ikm, byte[] associatedData, int segmentSize, byte[] streamHeader)
      throws GeneralSecurityException {
    this.segmentSize = segmentSize;
    this.firstPlaintext = segmentSize - HEADER_SIZE - TAG_SIZE;
    this.plaintext = segmentSize - TAG_SIZE;
    this.streamHeader = streamHeader;
    byte[] derived = hkdfSha256(ikm, Arrays.copyOfRange(streamHeader, 1, 1 + KEY_SIZE), associatedData);
    this.key = new SecretKeySpec(derived, "AES");
    Arrays.fill(derived, (byte) 0);
    System.arraycopy(streamHeader, 1 + KEY_SIZE, nonce, 0, NONCE_PREFIX_SIZE);
    this.gcm = Cipher.getInstance("AES/GCM/NoPadding");
    this.ctr = Cipher.getInstance("AES/CTR/NoPadding");
  }

  /** A decrypter for the stream whose 40-byte header is {@code streamHeader}; null if that header is malformed. */
  static StreamingAead forDecryption(byte[] ikm, byte[] associatedData, int segmentSize, byte[] streamHeader)
      throws GeneralSecurityException {
    if (streamHeader.length != HEADER_SIZE || streamHeader[0] != HEADER_SIZE || ikm.length != KEY_SIZE) {
      return null;
    }
    return new StreamingAead(ikm, associatedData, segmentSize, streamHeader.clone());
  }

  /** An encrypter for a new stream: fresh salt and nonce prefix from {@code random}. */
  static StreamingAead forEncryption(byte[] ikm, byte[] associatedData, int segmentSize, SecureRandom random)
      throws GeneralSecurityException {
    byte[] header = new byte[HEADER_SIZE];
    header[0] = HEADER_SIZE;
    byte[] salt = new byte[KEY_SIZE + NONCE_PREFIX_SIZE];
    random.nextBytes(salt);
    System.arraycopy(salt, 0, header, 1, salt.length);
    return new StreamingAead(ikm, associatedData, segmentSize, header);
  }

  byte[] streamHeader() {
    return streamHeader.clone();
  }

  /** Plaintext capacity of a full segment {@code index}. */
  int capacity(long index) {
    return index == 0 ? firstPlaintext : plaintext;
  }

  /** Ciphertext bytes of a full segment {@code index} within the stream (segment 0 follows the stream header). */
  int sealedCapacity(long index) {
    return index == 0 ? segmentSize - HEADER_SIZE : segmentSize;
  }

  /** Encrypt {@code len} bytes as segment {@code index}; returns the bytes written to {@code out} (len + 16). */
  int seal(long index, boolean last, byte[] in, int off, int len, byte[] out, int outOff)
      throws GeneralSecurityException {
    gcm.init(Cipher.ENCRYPT_MODE, key, new GCMParameterSpec(TAG_SIZE * 8, nonce(index, last)));
    int written = 0;
    for (int done = 0; done < len; done += CHUNK) {
      written += gcm.update(in, off + done, Math.min(CHUNK, len - done), out, outOff + written);
    }
    return written + gcm.doFinal(out, outOff + written);
  }

  /**
   * Decrypt and verify segment {@code index}; returns the plaintext length, or -1 if it does not
   * authenticate (the output region is then zeroed: nothing unverified is left to read).
   *
   * <p>GCM is CTR encryption from counter {@code nonce ‖ 2} plus a tag over the ciphertext; the tag is
   * recomputed by GCM-encrypting the recovered plaintext under the same nonce, which reproduces this
   * very ciphertext (no new ciphertext is made under the nonce), and compared in constant time.
   */
  int open(long index, boolean last, byte[] in, int off, int len, byte[] out, int outOff)
      throws GeneralSecurityException {
    if (len < TAG_SIZE || index < 0 || index >= MAX_SEGMENTS) {
      return -1;
    }
    int length = len - TAG_SIZE;
    byte[] segmentNonce = nonce(index, last);
    byte[] counter = new byte[16];
    System.arraycopy(segmentNonce, 0, counter, 0, segmentNonce.length);
    counter[15] = 2;
    ctr.init(Cipher.DECRYPT_MODE, key, new IvParameterSpec(counter));
    for (int done = 0; done < length; done += CHUNK) {
      int n = Math.min(CHUNK, length - done);
      if (ctr.update(in, off + done, n, out, outOff + done) != n) {
        throw new GeneralSecurityException("AES-CTR returned a short block");
      }
    }
    Cipher tagger = gcm;
    try {
      tagger.init(Cipher.ENCRYPT_MODE, key, new GCMParameterSpec(TAG_SIZE * 8, segmentNonce));
    } catch (InvalidAlgorithmParameterException e) {
      // JCE refuses one Cipher the same key and nonce twice in a row (the same segment opened again);
      // re-encrypting to this ciphertext is what we want here, so use a fresh instance.
      tagger = Cipher.getInstance("AES/GCM/NoPadding");
      tagger.init(Cipher.ENCRYPT_MODE, key, new GCMParameterSpec(TAG_SIZE * 8, segmentNonce));
    }
    for (int done = 0; done < length; done += CHUNK) {
      tagger.update(out, outOff + done, Math.min(CHUNK, length - done), scratch, 0);
    }
    int tail = tagger.doFinal(scratch, 0);
    boolean valid = MessageDigest.isEqual(Arrays.copyOfRange(scratch, tail - TAG_SIZE, tail),
        Arrays.copyOfRange(in, off + length, off + len));
    if (!valid) {
      Arrays.fill(out, outOff, outOff + length, (byte) 0);
      return -1;
    }
    return length;
  }

  private byte[] nonce(long index, boolean last) {
    byte[] value = nonce.clone();
    value[7] = (byte) (index >>> 24);
    value[8] = (byte) (index >>> 16);
    value[9] = (byte) (index >>> 8);
    value[10] = (byte) index;
    value[11] = (byte) (last ? 1 : 0);
    return value;
  }

  /** RFC 5869 with SHA-256, one output block (32 bytes). */
  static byte[] hkdfSha256(byte[] ikm, byte[] salt, byte[] info) throws GeneralSecurityException {
    Mac mac = Mac.getInstance("HmacSHA256");
    mac.init(new SecretKeySpec(salt.length == 0 ? new byte[32] : salt, "HmacSHA256"));
    byte[] prk = mac.doFinal(ikm);
    mac.init(new SecretKeySpec(prk, "HmacSHA256"));
    Arrays.fill(prk, (byte) 0);
    mac.update(info);
    mac.update((byte) 1);
    return mac.doFinal();
  }
}
