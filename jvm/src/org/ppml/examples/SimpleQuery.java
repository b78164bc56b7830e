package org.ppml.examples;

import static org.apache.spark.sql.functions.col;

import java.util.HashMap;
import java.util.Map;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SaveMode;
import org.apache.spark.sql.SparkSession;

/**
 * SimpleQuery, the JVM way: the developers aged 20 to 40 in an encrypted people.csv (BigDL PPML's
 * reference job), read with Spark's own CSV reader through ppml's envelope codec and written
 * encrypted by it. Data keys come from the key agent of the TEE it runs in; run it with
 *
 * <pre>
 * ppml submit --tee simulated ... --class org.ppml.examples.SimpleQuery $(ppml jvm classpath) \
 *     --inputPath people.csv.ppml --outputPath out --kms ppml+https://HOST:PORT?... --primaryKey KEY_ID
 * </pre>
 *
 * <p>Arguments keep BigDL's names ({@code --inputPath --outputPath --inputEncryptModeValue
 * --outputEncryptModeValue --inputPartitionNum --outputPartitionNum}) plus {@code --kms} and
 * {@code --primaryKey}. Encrypt modes: {@code plain_text} and {@code ppml}.
 */
public final class SimpleQuery {
  private static final String PLAIN = "plain_text";
  private static final String ENVELOPE = "ppml";

  private SimpleQuery() {}

  public static void main(String[] argv) {
    Map<String, String> args = parse(argv);
    String inputMode = args.getOrDefault("inputEncryptModeValue", ENVELOPE);
    String outputMode = args.getOrDefault("outputEncryptModeValue", ENVELOPE);
    int inputPartitions = Integer.parseInt(args.getOrDefault("inputPartitionNum", "0"));
    int outputPartitions = Integer.parseInt(args.getOrDefault("outputPartitionNum", "1"));
    String kms = args.get("kms");
    if ((ENVELOPE.equals(inputMode) || ENVELOPE.equals(outputMode)) && kms == null) {
      usage("the ppml mode needs --kms");
    }
    if (ENVELOPE.equals(outputMode) && args.get("primaryKey") == null) {
      usage("encrypted output needs --primaryKey KEY_ID");
    }

    SparkSession spark = SparkSession.builder().appName("SimpleQuery").getOrCreate();
    try {
      Dataset<Row> people = spark.read().schema("name STRING, age INT, job STRING").option("header", "true")
          .option("ppml.kms.uri", kms == null ? "" : kms).csv(args.get("inputPath"));
      if (inputPartitions > 0) {
        people = people.repartition(inputPartitions);
      }
      System.out.println("Num of rows in people is " + people.count());
      Dataset<Row> developers = people
          .filter(col("job").equalTo("Developer").and(col("age").geq(20)).and(col("age").leq(40))).cache();
      System.out.println("Num of Developer age between 20,40 is " + developers.count());
      Dataset<Row> output = outputPartitions > 0 ? developers.repartition(outputPartitions) : developers;
      var writer = output.write().mode(SaveMode.Overwrite).option("header", "true");
      if (ENVELOPE.equals(outputMode)) {
        // A fresh data key per output file from the TEE's key agent, wrapped by --primaryKey.
        writer = writer.option("compression", "ppml.envelope").option("ppml.kms.uri", kms)
            .option("ppml.codec.key.id", args.get("primaryKey"));
      }
      writer.csv(args.get("outputPath"));
      developers.unpersist();
    } finally {
      spark.stop();
    }
  }

  private static Map<String, String> parse(String[] argv) {
    Map<String, String> args = new HashMap<>();
    for (int i = 0; i < argv.length; i++) {
      if (!argv[i].startsWith("--") || i + 1 >= argv.length) {
        usage("unexpected argument " + argv[i]);
      }
      args.put(argv[i].substring(2), argv[++i]);
    }
    for (String required : new String[] {"inputPath", "outputPath"}) {
      if (!args.containsKey(required)) {
        usage("--" + required + " is required");
      }
    }
    return args;
  }

  private static void usage(String problem) {
    System.err.println("SimpleQuery: " + problem);
    System.err.println("usage: SimpleQuery --inputPath P --outputPath P [--inputEncryptModeValue plain_text|ppml]"
        + " [--outputEncryptModeValue plain_text|ppml] [--inputPartitionNum N] [--outputPartitionNum N]"
        + " [--kms URI] [--primaryKey KEY_ID]");
    System.exit(2);
  }
}
