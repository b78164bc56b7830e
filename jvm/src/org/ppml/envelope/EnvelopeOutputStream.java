package org.ppml.envelope;

import java.io.IOException;
import java.io.OutputStream;
import java.security.GeneralSecurityException;
import java.security.SecureRandom;
import java.util.Arrays;

/**
 * Encrypts a stream into a ppml envelope (byte-compatible with Python's {@code EnvelopeWriter}):
 * the header, the stream header, then segments. A full segment is sealed only when more plaintext
 * arrives, so {@link #finish()} always seals a segment flagged last. {@link #finish()} does not close
 * the underlying stream; {@link #close()} does.
 */
public final class EnvelopeOutputStream extends OutputStream {
  private static final SecureRandom RANDOM = new SecureRandom();
  private final OutputStream out;
  private final StreamingAead aead;
  private final byte[] plain;
  private final byte[] sealed;
  private int filled;
  private long index;
  private boolean finished;

  /** Write {@code header} and start the body under {@code dataKey} (32 bytes; the caller may wipe it after). */
  public EnvelopeOutputStream(OutputStream out, EnvelopeHeader header, byte[] dataKey) throws IOException {
    this.out = out;
    byte[] headerBytes = header.toBytes();
    try {
      if (dataKey.length != StreamingAead.KEY_SIZE) {
        throw new IOException("ppml: a data key has 32 bytes, this one " + dataKey.length);
      }
      this.aead = StreamingAead.forEncryption(dataKey, headerBytes, header.segmentSize, RANDOM);
    } catch (GeneralSecurityException e) {
      throw new IOException("ppml: this JVM lacks AES-GCM or HMAC-SHA256: " + e, e);
    }
    this.plain = new byte[aead.plaintext];
    this.sealed = new byte[aead.segmentSize];
    out.write(headerBytes);
    out.write(aead.streamHeader());
  }

  @Override
  public void write(int b) throws IOException {
    write(new byte[] {(byte) b}, 0, 1);
  }

  @Override
  public void write(byte[] b, int off, int len) throws IOException {
    if (finished) {
      throw new IOException("ppml: write to a finished envelope");
    }
    while (len > 0) {
      int capacity = aead.capacity(index);
      if (filled == capacity) {
        seal(false);
        capacity = aead.capacity(index);
      }
      int n = Math.min(len, capacity - filled);
      System.arraycopy(b, off, plain, filled, n);
      filled += n;
      off += n;
      len -= n;
    }
  }

  private void seal(boolean last) throws IOException {
    if (index >= StreamingAead.MAX_SEGMENTS) {
      throw new IOException("ppml: too many segments for one envelope");
    }
    int n;
    try {
      n = aead.seal(index, last, plain, 0, filled, sealed, 0);
    } catch (GeneralSecurityException e) {
      throw new IOException("ppml: AES-GCM failed: " + e, e);
    }
    out.write(sealed, 0, n);
    index++;
    filled = 0;
  }

  /** Seal the last segment; nothing may be written after. */
  public void finish() throws IOException {
    if (!finished) {
      seal(true);
      finished = true;
      Arrays.fill(plain, (byte) 0);
    }
  }

  @Override
  public void flush() throws IOException {
    out.flush();
  }

  @Override
  public void close() throws IOException {
    try {
      finish();
    } finally {
      out.close();
    }
  }
}
