package ppml;

/**
 * The short name for Spark's {@code compression} option: {@code df.write.option("compression", "ppml.envelope")}.
 * Spark looks codec names it does not know up as class names ({@code CompressionCodecs.getCodecClassName});
 * this class is {@link org.ppml.codec.PpmlCodec} under that name.
 *
 * <p>Why not just {@code "ppml"}: a class named {@code ppml} in the default package would also be what
 * {@code DataSource.lookupDataSource("ppml")} finds, which shadows ppml's Python data source
 * ({@code format("ppml")}) and makes registering it fail with DATA_SOURCE_ALREADY_EXISTS.
 */
public class envelope extends org.ppml.codec.PpmlCodec {}
