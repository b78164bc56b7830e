package org.ppml.codec;

import java.io.IOException;
import java.io.InputStream;
import org.apache.hadoop.fs.Seekable;
import org.apache.hadoop.io.compress.SplitCompressionInputStream;
import org.ppml.envelope.EnvelopeHeader;
import org.ppml.envelope.EnvelopeInputStream;

/**
 * One input split of an envelope, cut on segment boundaries (BZip2Codec's BYBLOCK contract with
 * segments for blocks), so Hadoop's {@code LineRecordReader} reads every line of the file exactly once.
 *
 * <p>Segment {@code i} is <em>keyed</em> at file offset {@code c(i)}: {@code c(0) = 0} (segment 0 carries the
 * headers) and {@code c(i) = N + i·S} otherwise (where its ciphertext starts; N the envelope header's
 * size, S the segment size). A split {@code [start, end)} <em>owns</em> the segments keyed inside it, so
 * every segment has exactly one owner. With {@code j0} the first segment keyed at or after {@code start}
 * and {@code k} the first keyed at or after {@code end}, the split owns segments {@code j0 .. k-1}:
 * <ul>
 *   <li>{@code getAdjustedStart() = c(j0)}: 0 exactly for the split owning segment 0, which alone keeps
 *       its first line (and the CSV header); every other split skips its first, partial line.
 *   <li>{@code getAdjustedEnd() = c(k) - 1}.
 *   <li>{@code getPos() = c(s)} where {@code s} is the segment of the bytes handed out last ({@code c(j0)}
 *       before any): it moves only when the first byte of a new segment is returned, and reads never
 *       span two segments (as BZip2 advertises a new position one byte past a block marker).
 * </ul>
 * So {@code getPos() <= getAdjustedEnd()} exactly while the bytes handed out last lie in an owned segment.
 * LineRecordReader tests that before each line, right after the previous line's terminator: the split
 * reads each line that starts at a plaintext offset {@code p} with {@code A < p <= B} ({@code A}, {@code B}
 * where its first and past its last owned segment's plaintext begin; {@code 0 <= p} for the first split),
 * finishing the last one in the next segment; the next split, starting at {@code B}, skips through its
 * first terminator and so begins at the first line with {@code p > B}. When a bare {@code \r} ends segment
 * {@code k-1}, the reader's look for a {@code \n} hands out the next segment's first byte; Hadoop's
 * {@code CompressedSplitLineReader} then reads the one additional record starting at {@code B} (its
 * {@code needAdditionalRecord}), which the next split skips. A split that owns no segment (it lies inside
 * one) returns nothing and reads nothing.
 */
final class SegmentSplitInputStream extends SplitCompressionInputStream {
  private final long headerSize;
  private final long segmentSize;
  private final long firstSegment;
  private final EnvelopeInputStream plain;

  SegmentSplitInputStream(InputStream in, long start, long end, EnvelopeInputStream.KeySource keys, String source)
      throws IOException {
    super(in, start, end);
    Seekable seekable = (Seekable) in;
    seekable.seek(0);
    EnvelopeHeader header = EnvelopeHeader.readFrom(in, source);
    this.headerSize = header.size();
    this.segmentSize = header.segmentSize;
    this.firstSegment = firstKeyedAtOrAfter(start);
    long stop = firstKeyedAtOrAfter(end);
    setStart(keyOf(firstSegment));
    setEnd(keyOf(stop) - 1);
    if (firstSegment >= stop) {
      this.plain = null;
      return;
    }
    seekable.seek(headerSize);
    this.plain = EnvelopeInputStream.openAt(in, header, keys, source, firstSegment, seekable::seek);
  }

  /** File offset where segment {@code index} is keyed. */
  private long keyOf(long index) {
    return index == 0 ? 0 : headerSize + index * segmentSize;
  }

  private long firstKeyedAtOrAfter(long offset) {
    if (offset <= 0) {
      return 0;
    }
    return Math.max(1, Math.floorDiv(offset - headerSize + segmentSize - 1, segmentSize));
  }

  @Override
  public long getPos() {
    return keyOf(plain == null ? firstSegment : plain.segment());
  }

  @Override
  public int read() throws IOException {
    return plain == null ? -1 : plain.read();
  }

  @Override
  public int read(byte[] b, int off, int len) throws IOException {
    return plain == null ? -1 : plain.read(b, off, len);
  }

  @Override
  public void resetState() {
    throw new UnsupportedOperationException("a ppml envelope cannot be reset");
  }

  @Override
  public void close() throws IOException {
    if (plain != null) {
      plain.close();
    }
    super.close();
  }
}
