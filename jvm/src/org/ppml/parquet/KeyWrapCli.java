package org.ppml.parquet;

import java.security.MessageDigest;
import java.util.HexFormat;
import org.apache.hadoop.conf.Configuration;
import org.apache.parquet.crypto.ParquetCryptoRuntimeException;

/**
 * {@link PpmlKmsClient} from the command line, for interoperability checks against ppml's Python
 * client: {@code wrap KMS MASTER_KEY_ID KEY_HEX} prints the wrapped key; {@code unwrap-digest KMS
 * MASTER_KEY_ID WRAPPED} prints the SHA-256 of the unwrapped key (never the key itself).
 */
public final class KeyWrapCli {
  private KeyWrapCli() {}

  public static void main(String[] args) throws Exception {
    if (args.length != 4 || !(args[0].equals("wrap") || args[0].equals("unwrap-digest"))) {
      System.err.println("usage: KeyWrapCli wrap KMS MASTER_KEY_ID KEY_HEX | unwrap-digest KMS MASTER_KEY_ID WRAPPED");
      System.exit(2);
    }
    Configuration conf = new Configuration(false);
    conf.set(PpmlKmsClient.KMS_URI_PROPERTY, args[1]);
    PpmlKmsClient client = new PpmlKmsClient();
    try {
      client.initialize(conf, args[1], "DEFAULT", "DEFAULT");
      if (args[0].equals("wrap")) {
        System.out.println(client.wrapKey(HexFormat.of().parseHex(args[3]), args[2]));
      } else {
        byte[] key = client.unwrapKey(args[3], args[2]);
        System.out.println(HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(key)));
      }
    } catch (ParquetCryptoRuntimeException e) {
      System.err.println(e.getMessage());
      System.exit(1);
    }
  }
}
