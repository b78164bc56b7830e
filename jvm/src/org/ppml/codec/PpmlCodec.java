package org.ppml.codec;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import org.apache.hadoop.conf.Configurable;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.Seekable;
import org.apache.hadoop.io.compress.CompressionInputStream;
import org.apache.hadoop.io.compress.CompressionOutputStream;
import org.apache.hadoop.io.compress.Compressor;
import org.apache.hadoop.io.compress.Decompressor;
import org.apache.hadoop.io.compress.SplitCompressionInputStream;
import org.apache.hadoop.io.compress.SplittableCompressionCodec;
import org.ppml.agent.KeyAgentClient;
import org.ppml.agent.KeyAgentException;
import org.ppml.envelope.EnvelopeHeader;
import org.ppml.envelope.EnvelopeInputStream;
import org.ppml.envelope.EnvelopeOutputStream;

/**
 * A Hadoop compression codec for ppml envelope files ({@code .ppml}), so Spark's own text, CSV and JSON
 * readers and writers run over encrypted files: {@code spark.read.csv("x.csv.ppml")} and
 * {@code df.write.option("compression", "ppml")}. The jar's service file registers it, so Hadoop's
 * {@code CompressionCodecFactory} recognises the extension with no configuration.
 *
 * <p>Settings (Hadoop configuration: {@code spark.hadoop.NAME} for a session, or {@code .option(NAME, ...)} on one
 * read or write, which Spark copies into the Hadoop configuration of file sources):
 * <ul>
 *   <li>{@value #KMS_URI}: the key service the key agent asks (reading and writing). Never taken from a file.
 *   <li>{@value #KEY_ID}: the primary key that wraps each output file's fresh data key (writing).
 *   <li>{@value #SEGMENT_SIZE}: ciphertext bytes per segment of written files, 4 KiB .. 64 MiB (default 1 MiB).
 * </ul>
 *
 * <p>Splitting ({@link SplittableCompressionCodec}, BZip2Codec's BYBLOCK contract adapted to segments): see
 * {@link SegmentSplitInputStream}. Data keys come only from the key agent ({@link DataKeys}).
 */
public class PpmlCodec implements SplittableCompressionCodec, Configurable {
  public static final String KMS_URI = "ppml.kms.uri";
  public static final String KEY_ID = "ppml.codec.key.id";
  public static final String SEGMENT_SIZE = "ppml.codec.segment.size";
  public static final String EXTENSION = ".ppml";

  private Configuration conf;

  @Override
  public void setConf(Configuration conf) {
    this.conf = conf;
  }

  @Override
  public Configuration getConf() {
    return conf;
  }

  private String setting(String name) {
    String value = conf == null ? null : conf.getTrimmed(name);
    return value == null || value.isEmpty() ? null : value;
  }

  @Override
  public String getDefaultExtension() {
    return EXTENSION;
  }

  // -- writing ------------------------------------------------------------------------------------

  @Override
  public CompressionOutputStream createOutputStream(OutputStream out) throws IOException {
    String keyId = setting(KEY_ID);
    if (keyId == null) {
      throw new KeyAgentException("UsageError", "writing ppml envelopes needs the primary key to wrap data keys: set "
          + KEY_ID + " (.option(\"" + KEY_ID + "\", KEY_ID) on the write, or spark.hadoop." + KEY_ID + ")");
    }
    String uri = setting(KMS_URI);
    if (uri == null) {
      throw new KeyAgentException("UsageError", "writing ppml envelopes needs the key service: set " + KMS_URI
          + " (.option(\"" + KMS_URI + "\", URI) on the write, or spark.hadoop." + KMS_URI + ")");
    }
    int segmentSize = segmentSize();
    KeyAgentClient.GeneratedKey generated = DataKeys.generate(uri, keyId);
    try {
      EnvelopeHeader header = new EnvelopeHeader(DataKeys.informational(uri), keyId, generated.wrapped, segmentSize,
          new byte[0]);
      return new EnvelopeCompressionOutputStream(out, new EnvelopeOutputStream(out, header, generated.key));
    } catch (IllegalArgumentException e) {
      throw new KeyAgentException("UsageError", "cannot write a ppml header: " + e.getMessage());
    } finally {
      DataKeys.wipe(generated.key);
    }
  }

  private int segmentSize() throws KeyAgentException {
    String value = setting(SEGMENT_SIZE);
    if (value == null) {
      return EnvelopeHeader.DEFAULT_SEGMENT_SIZE;
    }
    try {
      long size = conf.getLongBytes(SEGMENT_SIZE, EnvelopeHeader.DEFAULT_SEGMENT_SIZE);
      if (size >= EnvelopeHeader.MIN_SEGMENT_SIZE && size <= EnvelopeHeader.MAX_SEGMENT_SIZE) {
        return (int) size;
      }
    } catch (NumberFormatException e) {
      // reported below
    }
    throw new KeyAgentException("UsageError", SEGMENT_SIZE + " must be " + EnvelopeHeader.MIN_SEGMENT_SIZE + " .. "
        + EnvelopeHeader.MAX_SEGMENT_SIZE + " bytes (suffixes k, m allowed), not " + value);
  }

  @Override
  public CompressionOutputStream createOutputStream(OutputStream out, Compressor compressor) throws IOException {
    return createOutputStream(out);
  }

  @Override
  public Class<? extends Compressor> getCompressorType() {
    return null;
  }

  @Override
  public Compressor createCompressor() {
    return null;
  }

  // -- reading ------------------------------------------------------------------------------------

  @Override
  public CompressionInputStream createInputStream(InputStream in) throws IOException {
    String source = InputName.current();
    EnvelopeInputStream plain = EnvelopeInputStream.open(in, new DataKeys(setting(KMS_URI), source), source);
    return new WholeEnvelopeInputStream(in, plain);
  }

  @Override
  public CompressionInputStream createInputStream(InputStream in, Decompressor decompressor) throws IOException {
    return createInputStream(in);
  }

  @Override
  public SplitCompressionInputStream createInputStream(InputStream seekableIn, Decompressor decompressor, long start,
      long end, READ_MODE readMode) throws IOException {
    if (!(seekableIn instanceof Seekable)) {
      throw new IOException("ppml: splitting an envelope needs a seekable input, got " + seekableIn.getClass().getName());
    }
    String source = InputName.current();
    return new SegmentSplitInputStream(seekableIn, start, end, new DataKeys(setting(KMS_URI), source), source);
  }

  @Override
  public Class<? extends Decompressor> getDecompressorType() {
    return NoDecompressor.class;
  }

  @Override
  public Decompressor createDecompressor() {
    return new NoDecompressor();
  }

  /** The non-split reader: the whole envelope from its start. */
  private static final class WholeEnvelopeInputStream extends CompressionInputStream {
    private final EnvelopeInputStream plain;

    WholeEnvelopeInputStream(InputStream in, EnvelopeInputStream plain) throws IOException {
      super(in);
      this.plain = plain;
    }

    @Override
    public int read() throws IOException {
      return plain.read();
    }

    @Override
    public int read(byte[] b, int off, int len) throws IOException {
      return plain.read(b, off, len);
    }

    @Override
    public void resetState() {
      throw new UnsupportedOperationException("a ppml envelope cannot be reset");
    }
  }

  /** The writer: Hadoop's stream shape around {@link EnvelopeOutputStream}. */
  private static final class EnvelopeCompressionOutputStream extends CompressionOutputStream {
    private final EnvelopeOutputStream envelope;

    EnvelopeCompressionOutputStream(OutputStream out, EnvelopeOutputStream envelope) {
      super(out);
      this.envelope = envelope;
    }

    @Override
    public void write(int b) throws IOException {
      envelope.write(b);
    }

    @Override
    public void write(byte[] b, int off, int len) throws IOException {
      envelope.write(b, off, len);
    }

    @Override
    public void finish() throws IOException {
      envelope.finish();
    }

    @Override
    public void resetState() {
      throw new UnsupportedOperationException("a ppml envelope cannot be reset: each file gets its own data key");
    }
  }
}
