package org.ppml.codec;

import org.apache.hadoop.io.compress.Decompressor;

/**
 * The codec decrypts in its streams, not through a {@link Decompressor}; Hadoop's line reader still
 * borrows one from its pool, and this placeholder (as BZip2Codec's dummy) lets the pool reuse it
 * quietly instead of logging a "brand-new decompressor" per split.
 */
public final class NoDecompressor implements Decompressor {
  @Override
  public void setInput(byte[] b, int off, int len) {
    throw new UnsupportedOperationException();
  }

  @Override
  public boolean needsInput() {
    return false;
  }

  @Override
  public void setDictionary(byte[] b, int off, int len) {
    throw new UnsupportedOperationException();
  }

  @Override
  public boolean needsDictionary() {
    return false;
  }

  @Override
  public boolean finished() {
    return false;
  }

  @Override
  public int decompress(byte[] b, int off, int len) {
    throw new UnsupportedOperationException();
  }

  @Override
  public int getRemaining() {
    return 0;
  }

  @Override
  public void reset() {}

  @Override
  public void end() {}
}
