package org.ppml.agent;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Base64;
import java.util.List;

/**
 * Unwrap throughput and latency through the key agent, from JVM threads as Spark task threads ask:
 * {@code AgentBench KMS KEY_ID WRAPPED_B64 THREADS SECONDS}. Each thread opens its own connection and
 * unwraps the same wrapped data key in a loop for SECONDS; prints one line
 * {@code threads=N unwraps=U seconds=S per_second=R p50_ms=A p99_ms=B errors=E}. No key material is printed.
 */
public final class AgentBench {
  private AgentBench() {}

  public static void main(String[] args) throws Exception {
    if (args.length != 5) {
      System.err.println("usage: AgentBench KMS KEY_ID WRAPPED_B64 THREADS SECONDS");
      System.exit(2);
    }
    String kms = args[0];
    String keyId = args[1];
    byte[] wrapped = Base64.getDecoder().decode(args[2]);
    int threads = Integer.parseInt(args[3]);
    long nanos = (long) (Double.parseDouble(args[4]) * 1e9);
    List<long[]> latencies = new ArrayList<>();
    int[] counts = new int[threads];
    int[] errors = new int[threads];
    Thread[] workers = new Thread[threads];
    long[] started = new long[1];
    for (int i = 0; i < threads; i++) {
      long[] mine = new long[1 << 22];
      latencies.add(mine);
      int index = i;
      workers[i] = new Thread(() -> {
        try (KeyAgentClient client = new KeyAgentClient(KeyAgentClient.agentPath())) {
          client.unwrap(kms, keyId, wrapped, new byte[0]); // connect and warm up outside the clock
          long deadline = started[0] + nanos;
          int n = 0;
          while (true) {
            long before = System.nanoTime();
            if (before >= deadline || n == mine.length) {
              break;
            }
            try {
              client.unwrap(kms, keyId, wrapped, new byte[0]);
            } catch (KeyAgentException e) {
              errors[index]++;
            }
            mine[n++] = System.nanoTime() - before;
          }
          counts[index] = n;
        } catch (Exception e) {
          System.err.println(e.getMessage());
          errors[index]++;
        }
      });
    }
    started[0] = System.nanoTime() + 200_000_000L; // every thread connects first
    for (Thread worker : workers) {
      worker.start();
    }
    while (System.nanoTime() < started[0]) {
      Thread.sleep(1);
    }
    for (Thread worker : workers) {
      worker.join();
    }
    double seconds = (System.nanoTime() - started[0]) / 1e9;
    int total = Arrays.stream(counts).sum();
    long[] all = new long[total];
    int at = 0;
    for (int i = 0; i < threads; i++) {
      System.arraycopy(latencies.get(i), 0, all, at, counts[i]);
      at += counts[i];
    }
    Arrays.sort(all);
    System.out.printf("threads=%d unwraps=%d seconds=%.3f per_second=%.1f p50_ms=%.3f p99_ms=%.3f errors=%d%n",
        threads, total, seconds, total / seconds, percentile(all, 0.50), percentile(all, 0.99),
        Arrays.stream(errors).sum());
  }

  private static double percentile(long[] sorted, double p) {
    if (sorted.length == 0) {
      return Double.NaN;
    }
    return sorted[Math.min(sorted.length - 1, (int) Math.ceil(p * sorted.length) - 1)] / 1e6;
  }
}
