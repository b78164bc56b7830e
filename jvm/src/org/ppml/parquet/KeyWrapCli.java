package org.ppml.parquet;

import java.security.MessageDigest;
import java.util.HexFormat;
import org.apache.hadoop.conf.Configuration;
import org.apache.parquet.crypto.ParquetCryptoRuntimeException;

/**
 * {@link PpmlKmsClient} from the command line, for interoperability checks against ppml's Python
 * client: {@code wrap KMS MASTER_KEY_ID KEY_HEX} prints the wrapped key; {@code unwrap-digest KMS
 * MASTER_KEY_ID WRAPPED...} prints, per wrapped key, {@code ok} and the SHA-256 of the unwrapped key
 * (never the key itself) or {@code error} and ppml's message. Exits 1 if any failed.
 */
public final class KeyWrapCli {
  private KeyWrapCli() {}

  public static void main(String[] args) throws Exception {
    boolean wrap = args.length == 4 && args[0].equals("wrap");
    if (!wrap && !(args.length >= 4 && args[0].equals("unwrap-digest"))) {
      System.err.println("usage: KeyWrapCli wrap KMS MASTER_KEY_ID KEY_HEX | unwrap-digest KMS MASTER_KEY_ID WRAPPED...");
      System.exit(2);
    }
    Configuration conf = new Configuration(false);
    conf.set(PpmlKmsClient.KMS_URI_PROPERTY, args[1]);
    PpmlKmsClient client = new PpmlKmsClient();
    client.initialize(conf, args[1], "DEFAULT", "DEFAULT");
    boolean failed = false;
    for (int i = 3; i < args.length; i++) {
      try {
        if (wrap) {
          System.out.println(client.wrapKey(HexFormat.of().parseHex(args[i]), args[2]));
        } else {
          byte[] key = client.unwrapKey(args[i], args[2]);
          System.out.println("ok " + HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(key)));
        }
      } catch (ParquetCryptoRuntimeException e) {
        System.out.println("error " + e.getMessage());
        failed = true;
      }
    }
    System.exit(failed ? 1 : 0);
  }
}
