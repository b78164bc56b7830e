package org.ppml.envelope;

import java.io.IOException;
import java.io.InputStream;
import java.security.GeneralSecurityException;

/**
 * Verified plaintext of a ppml envelope, read sequentially from one segment on. Each segment is
 * read whole, decrypted and authenticated before any of its bytes is handed out. The last segment
 * is found without knowing the file's length, as Tink's decrypting stream does: a full segment
 * followed by end of input is the last one (one byte is read ahead), so truncation at a segment
 * boundary, appended bytes and reordering all fail to authenticate.
 *
 * <p>Reads never span two segments: {@link #segment()} names the segment of the bytes handed out last,
 * which the split codec advertises as the stream position.
 */
public final class EnvelopeInputStream extends InputStream {
  private final InputStream raw;
  private final StreamingAead aead;
  private final String source;
  private final byte[] sealed;
  private final byte[] plain;
  private int plainLength;
  private int plainPosition;
  private long segment;
  private long next;
  private boolean carried;
  private boolean ended;
  private boolean closed;

  /** Data keys for envelopes: given the parsed header, the 32-byte data key (or an IOException naming the cause). */
  @FunctionalInterface
  public interface KeySource {
    byte[] dataKey(EnvelopeHeader header) throws IOException;
  }

  EnvelopeInputStream(InputStream raw, StreamingAead aead, long firstSegment, String source) {
    this.raw = raw;
    this.aead = aead;
    this.source = source;
    this.sealed = new byte[aead.segmentSize + 1];
    this.plain = new byte[aead.plaintext];
    this.segment = firstSegment;
    this.next = firstSegment;
  }

  /** Read the header of the envelope at the start of {@code raw}, get its key and decrypt from segment 0. */
  public static EnvelopeInputStream open(InputStream raw, KeySource keys, String source) throws IOException {
    EnvelopeHeader header = EnvelopeHeader.readFrom(raw, source);
    return openBody(raw, header, keys, source, 0);
  }

  /**
   * Decrypt from segment {@code firstSegment} of the envelope with {@code header}: {@code raw} is at the
   * stream header (40 bytes after the envelope header), and {@code seek} moves it to a file offset.
   */
  public static EnvelopeInputStream openAt(InputStream raw, EnvelopeHeader header, KeySource keys, String source,
      long firstSegment, Seek seek) throws IOException {
    EnvelopeInputStream stream = openBody(raw, header, keys, source, firstSegment);
    if (firstSegment > 0) {
      seek.seek(header.size() + firstSegment * header.segmentSize);
    }
    return stream;
  }

  /** Moves the underlying input to a file offset. */
  @FunctionalInterface
  public interface Seek {
    void seek(long offset) throws IOException;
  }

  private static EnvelopeInputStream openBody(InputStream raw, EnvelopeHeader header, KeySource keys, String source,
      long firstSegment) throws IOException {
    byte[] streamHeader = new byte[StreamingAead.HEADER_SIZE];
    if (EnvelopeHeader.readFully(raw, streamHeader, 0, streamHeader.length) != streamHeader.length) {
      throw CiphertextException.invalid(source);
    }
    byte[] key = keys.dataKey(header);
    try {
      StreamingAead aead = StreamingAead.forDecryption(key, header.toBytes(), header.segmentSize, streamHeader);
      if (aead == null) {
        throw CiphertextException.invalid(source);
      }
      return new EnvelopeInputStream(raw, aead, firstSegment, source);
    } catch (GeneralSecurityException e) {
      throw new IOException("ppml: this JVM lacks AES-GCM or HMAC-SHA256: " + e, e);
    } finally {
      java.util.Arrays.fill(key, (byte) 0);
    }
  }

  /** The segment whose bytes were handed out last (the first segment before any read). */
  public long segment() {
    return segment;
  }

  @Override
  public int read() throws IOException {
    byte[] one = new byte[1];
    return read(one, 0, 1) < 0 ? -1 : one[0] & 0xff;
  }

  @Override
  public int read(byte[] b, int off, int len) throws IOException {
    if (len == 0) {
      return 0;
    }
    while (plainPosition == plainLength) {
      if (!advance()) {
        return -1;
      }
    }
    int n = Math.min(len, plainLength - plainPosition);
    System.arraycopy(plain, plainPosition, b, off, n);
    plainPosition += n;
    return n;
  }

  @Override
  public long skip(long n) throws IOException {
    long done = 0;
    while (done < n) {
      if (plainPosition == plainLength && !advance()) {
        break;
      }
      int step = (int) Math.min(n - done, plainLength - plainPosition);
      plainPosition += step;
      done += step;
    }
    return done;
  }

  @Override
  public int available() {
    return plainLength - plainPosition;
  }

  /** Decrypt the next segment into the plaintext buffer; false once the last one was handed out. */
  private boolean advance() throws IOException {
    if (ended || closed) {
      return false;
    }
    long index = next;
    int capacity = aead.sealedCapacity(index);
    int have = carried ? 1 : 0;
    int got = have + EnvelopeHeader.readFully(raw, sealed, have, capacity + 1 - have);
    boolean last = got <= capacity;
    int length = last ? got : capacity;
    int opened;
    try {
      opened = aead.open(index, last, sealed, 0, length, plain, 0);
    } catch (GeneralSecurityException e) {
      opened = -1;
    }
    if (opened < 0) {
      plainLength = plainPosition = 0;
      ended = true;
      throw CiphertextException.invalid(source);
    }
    if (!last) {
      sealed[0] = sealed[capacity];
    }
    carried = !last;
    ended = last;
    plainLength = opened;
    plainPosition = 0;
    segment = index;
    next = index + 1;
    return true;
  }

  @Override
  public void close() throws IOException {
    closed = true;
    plainLength = plainPosition = 0;
    raw.close();
  }
}
