package org.ppml.envelope;

import java.security.SecureRandom;

/**
 * Single-core AES-GCM throughput of the envelope's segment cipher (1 MiB segments, JCE), for the
 * codec benchmark ({@code bench/codec.py}) to print beside {@code openssl speed -evp aes-256-gcm}.
 */
public final class Throughput {
  private Throughput() {}

  public static void main(String[] args) throws Exception {
    int segment = EnvelopeHeader.DEFAULT_SEGMENT_SIZE;
    int count = args.length > 0 ? Integer.parseInt(args[0]) : 1500;
    byte[] key = new byte[StreamingAead.KEY_SIZE];
    new SecureRandom().nextBytes(key);
    StreamingAead sealer = StreamingAead.forEncryption(key, new byte[64], segment, new SecureRandom());
    StreamingAead opener = StreamingAead.forDecryption(key, new byte[64], segment, sealer.streamHeader());
    byte[] plain = new byte[sealer.plaintext];
    byte[][] sealed = new byte[2][segment];  // two segments: GCM refuses the same nonce twice in a row
    byte[] out = new byte[segment];
    sealer.seal(0, false, plain, 0, plain.length, sealed[0], 0);
    sealer.seal(1, false, plain, 0, plain.length, sealed[1], 0);
    double bestSeal = 0;
    double bestOpen = 0;
    for (int round = 0; round < 4; round++) {  // the first round warms the JIT up
      long started = System.nanoTime();
      for (int i = 2; i < count + 2; i++) {
        sealer.seal(i, false, plain, 0, plain.length, out, 0);
      }
      bestSeal = Math.max(bestSeal, rate(count, plain.length, started));
      started = System.nanoTime();
      for (int i = 0; i < count; i++) {
        if (opener.open(i % 2, false, sealed[i % 2], 0, segment, out, 0) < 0) {
          throw new IllegalStateException("a segment failed to authenticate");
        }
      }
      bestOpen = Math.max(bestOpen, rate(count, plain.length, started));
    }
    System.out.printf("JCE AES-256-GCM, 1 MiB segments, one core: encrypt %.0f MB/s, decrypt %.0f MB/s (%s)%n",
        bestSeal, bestOpen, System.getProperty("java.vm.version"));
  }

  private static double rate(int count, int bytes, long started) {
    return (double) count * bytes / ((System.nanoTime() - started) / 1e9) / 1e6;
  }
}
