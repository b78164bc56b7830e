package org.ppml.codec;

/** The file a Spark task is reading, for error messages: a Hadoop codec is handed a stream, never a path. */
final class InputName {
  private InputName() {}

  static String current() {
    try {
      String path = org.apache.spark.rdd.InputFileBlockHolder.getInputFilePath().toString();
      if (!path.isEmpty()) {
        return path;
      }
    } catch (LinkageError | RuntimeException e) {
      // not in a Spark task (or no Spark on the class path): fall through
    }
    return "a ppml envelope";
  }
}
