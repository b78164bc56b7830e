package org.ppml.envelope;

import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.CharBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;

/**
 * The header of a ppml envelope file, version 1 (the Java twin of {@code ppml.core.envelope.EnvelopeHeader},
 * with the same bounds checks). All integers big-endian; every length is checked before use:
 *
 * <pre>
 * offset  size  field
 *      0     4  magic                 "PPML"
 *      4     1  version               0x01
 *      5     4  header length N       total bytes of this header, magic included
 *      9     1  algorithm             0x01 = AES256_GCM_HKDF_SHA256 (Tink streaming)
 *     10     4  segment size S        ciphertext bytes per body segment, 4 KiB .. 64 MiB
 *     14   2+k  kms                   uint16 length k ≤ 2048, UTF-8 (informational: never dialled)
 *      .   2+i  key id                uint16 length 1 ≤ i ≤ 512, UTF-8
 *      .   2+w  wrapped data key      uint16 length 1 ≤ w ≤ 8192
 *      .   2+a  associated data       uint16 length a ≤ 65535
 * N = 22 + k + i + w + a
 *      N     -  body                  Tink AES-GCM-HKDF streaming ciphertext ({@link StreamingAead}),
 *                                     keyed by the data key, with the N header bytes as associated data
 * </pre>
 */
public final class EnvelopeHeader {
  public static final byte[] MAGIC = {'P', 'P', 'M', 'L'};
  public static final int VERSION = 1;
  public static final int ALGORITHM_AES256_GCM_HKDF_STREAMING = 1;
  public static final int DEFAULT_SEGMENT_SIZE = 1 << 20;
  public static final int MIN_SEGMENT_SIZE = 4 << 10;
  public static final int MAX_SEGMENT_SIZE = 64 << 20;
  static final int PREFIX_SIZE = 14;
  private static final int MAX_KMS = 2048;
  private static final int MAX_KEY_ID = 512;
  private static final int MAX_WRAPPED = 8192;
  private static final int MAX_AAD = 65535;
  static final int MAX_HEADER_SIZE = PREFIX_SIZE + 4 * 2 + MAX_KMS + MAX_KEY_ID + MAX_WRAPPED + MAX_AAD;

  public final String kms;
  public final String keyId;
  private final byte[] wrappedDataKey;
  private final byte[] associatedData;
  public final int segmentSize;
  private final byte[] bytes;

  /** A header to write; throws IllegalArgumentException for values outside the format's bounds. */
  public EnvelopeHeader(String kms, String keyId, byte[] wrappedDataKey, int segmentSize, byte[] associatedData) {
    this.kms = kms;
    this.keyId = keyId;
    this.wrappedDataKey = wrappedDataKey.clone();
    this.associatedData = associatedData.clone();
    this.segmentSize = segmentSize;
    String problem = check(kms.getBytes(StandardCharsets.UTF_8), keyId.getBytes(StandardCharsets.UTF_8),
        wrappedDataKey, associatedData, segmentSize);
    if (problem != null) {
      throw new IllegalArgumentException(problem);
    }
    byte[][] fields = {kms.getBytes(StandardCharsets.UTF_8), keyId.getBytes(StandardCharsets.UTF_8),
        wrappedDataKey, associatedData};
    int total = PREFIX_SIZE;
    for (byte[] field : fields) {
      total += 2 + field.length;
    }
    ByteBuffer out = ByteBuffer.allocate(total);
    out.put(MAGIC).put((byte) VERSION).putInt(total).put((byte) ALGORITHM_AES256_GCM_HKDF_STREAMING).putInt(segmentSize);
    for (byte[] field : fields) {
      out.putShort((short) field.length).put(field);
    }
    this.bytes = out.array();
  }

  private EnvelopeHeader(String kms, String keyId, byte[] wrapped, byte[] aad, int segmentSize, byte[] bytes) {
    this.kms = kms;
    this.keyId = keyId;
    this.wrappedDataKey = wrapped;
    this.associatedData = aad;
    this.segmentSize = segmentSize;
    this.bytes = bytes;
  }

  private static String check(byte[] kms, byte[] keyId, byte[] wrapped, byte[] aad, int segmentSize) {
    if (segmentSize < MIN_SEGMENT_SIZE || segmentSize > MAX_SEGMENT_SIZE) {
      return "segment size must be in [" + MIN_SEGMENT_SIZE + ", " + MAX_SEGMENT_SIZE + "]";
    }
    if (kms.length > MAX_KMS) {
      return "kms must have 0.." + MAX_KMS + " bytes";
    }
    if (keyId.length < 1 || keyId.length > MAX_KEY_ID) {
      return "key id must have 1.." + MAX_KEY_ID + " bytes";
    }
    if (wrapped.length < 1 || wrapped.length > MAX_WRAPPED) {
      return "wrapped data key must have 1.." + MAX_WRAPPED + " bytes";
    }
    if (aad.length > MAX_AAD) {
      return "associated data must have 0.." + MAX_AAD + " bytes";
    }
    return null;
  }

  public byte[] wrappedDataKey() {
    return wrappedDataKey.clone();
  }

  public byte[] associatedData() {
    return associatedData.clone();
  }

  /** The header's exact bytes: the body's associated data. */
  public byte[] toBytes() {
    return bytes.clone();
  }

  public int size() {
    return bytes.length;
  }

  /** Read and parse the header at the stream's position; {@code source} names the file in errors. */
  public static EnvelopeHeader readFrom(InputStream in, String source) throws IOException {
    byte[] prefix = new byte[PREFIX_SIZE];
    int got = readFully(in, prefix, 0, PREFIX_SIZE);
    if (got < MAGIC.length || !startsWithMagic(prefix)) {
      throw CiphertextException.notAnEnvelope(source);
    }
    if (got < PREFIX_SIZE) {
      throw CiphertextException.invalid(source);
    }
    int total = ByteBuffer.wrap(prefix).getInt(5);
    if (total <= PREFIX_SIZE || total > MAX_HEADER_SIZE) {
      throw CiphertextException.invalid(source);
    }
    byte[] data = new byte[total];
    System.arraycopy(prefix, 0, data, 0, PREFIX_SIZE);
    if (readFully(in, data, PREFIX_SIZE, total - PREFIX_SIZE) != total - PREFIX_SIZE) {
      throw CiphertextException.invalid(source);
    }
    return parse(data, source);
  }

  /** Parse a complete header. */
  public static EnvelopeHeader parse(byte[] data, String source) throws CiphertextException {
    if (data.length < MAGIC.length || !startsWithMagic(data)) {
      throw CiphertextException.notAnEnvelope(source);
    }
    if (data.length < PREFIX_SIZE) {
      throw CiphertextException.invalid(source);
    }
    ByteBuffer in = ByteBuffer.wrap(data);
    int version = in.get(4) & 0xff;
    int total = in.getInt(5);
    int algorithm = in.get(9) & 0xff;
    int segmentSize = in.getInt(10);
    if (version != VERSION || total != data.length || algorithm != ALGORITHM_AES256_GCM_HKDF_STREAMING) {
      throw CiphertextException.invalid(source);
    }
    byte[][] fields = new byte[4][];
    int offset = PREFIX_SIZE;
    for (int i = 0; i < 4; i++) {
      if (offset + 2 > total) {
        throw CiphertextException.invalid(source);
      }
      int length = in.getShort(offset) & 0xffff;
      offset += 2;
      if (offset + length > total) {
        throw CiphertextException.invalid(source);
      }
      fields[i] = new byte[length];
      System.arraycopy(data, offset, fields[i], 0, length);
      offset += length;
    }
    if (offset != total || check(fields[0], fields[1], fields[2], fields[3], segmentSize) != null) {
      throw CiphertextException.invalid(source);
    }
    try {
      return new EnvelopeHeader(utf8(fields[0]), utf8(fields[1]), fields[2], fields[3], segmentSize, data.clone());
    } catch (CharacterCodingException e) {
      throw CiphertextException.invalid(source);
    }
  }

  private static boolean startsWithMagic(byte[] data) {
    for (int i = 0; i < MAGIC.length; i++) {
      if (data[i] != MAGIC[i]) {
        return false;
      }
    }
    return true;
  }

  private static String utf8(byte[] value) throws CharacterCodingException {
    CharBuffer decoded = StandardCharsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPORT)
        .onUnmappableCharacter(CodingErrorAction.REPORT).decode(ByteBuffer.wrap(value));
    return decoded.toString();
  }

  /** Read up to {@code len} bytes, stopping only at EOF; returns how many were read. */
  static int readFully(InputStream in, byte[] buffer, int off, int len) throws IOException {
    int done = 0;
    while (done < len) {
      int n = in.read(buffer, off + done, len - done);
      if (n <= 0) {
        break; // a stream that gives nothing is treated as ended: the caller reports a truncation
      }
      done += n;
    }
    return done;
  }
}
