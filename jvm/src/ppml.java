/**
 * The short name for Spark's {@code compression} option: {@code df.write.option("compression", "ppml")}.
 * Spark looks unknown codec names up as class names ({@code CompressionCodecs.getCodecClassName}), so this
 * class in the default package is what makes the short name work; it is {@link org.ppml.codec.PpmlCodec}.
 */
public class ppml extends org.ppml.codec.PpmlCodec {}
