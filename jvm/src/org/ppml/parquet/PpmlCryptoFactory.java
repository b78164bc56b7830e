package org.ppml.parquet;

import java.io.FileNotFoundException;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FSDataInputStream;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.parquet.crypto.FileDecryptionProperties;
import org.apache.parquet.crypto.FileEncryptionProperties;
import org.apache.parquet.crypto.ParquetCryptoRuntimeException;
import org.apache.parquet.crypto.keytools.KeyToolkit;
import org.apache.parquet.crypto.keytools.PropertiesDrivenCryptoFactory;
import org.apache.parquet.hadoop.api.WriteSupport.WriteContext;

/**
 * parquet-mr's {@code PropertiesDrivenCryptoFactory} (the {@code parquet.encryption.*} settings)
 * made to write what ppml writes and to refuse what ppml's Python reader refuses.
 *
 * <p>Writes:
 * <ul>
 *   <li>{@code parquet.encryption.footer.key} alone encrypts every column under the footer key
 *       (parquet-mr would refuse it: it wants column keys or {@code parquet.encryption.uniform.key});
 *   <li>with {@code parquet.encryption.column.keys}, the columns they do not name are encrypted under the
 *       footer key ({@code parquet.encryption.complete.columns} defaults to true here), so no column
 *       is written in the clear unless the job says {@code complete.columns=false};
 *   <li>data keys and KEKs are 256-bit unless the job sets their lengths.
 * </ul>
 *
 * <p>Reads: parquet-mr's factory lets a plaintext file through its decryption properties, so a
 * plaintext file put where an encrypted one was expected would be read silently. Where the read
 * <em>requires</em> encryption, this factory refuses any file that is not PME with an encrypted footer
 * (last four bytes {@code PARE}, as ppml's Python reader checks), and parquet-mr's own plaintext
 * check stays on behind it. A read requires encryption when {@value #ENCRYPTION_REQUIRED} is true or,
 * if that is unset, when it names a key ({@code parquet.encryption.footer.key}, {@code uniform.key}
 * or {@code column.keys}, as a DataFrame option or session-wide). Other reads in the same session
 * take plaintext Parquet as before and PME files through the same keys.
 */
public class PpmlCryptoFactory extends PropertiesDrivenCryptoFactory {
  /** A read that must see only encrypted-footer PME files (Hadoop setting or DataFrame option). */
  public static final String ENCRYPTION_REQUIRED = "ppml.parquet.encryption.required";

  private static final byte[] ENCRYPTED_FOOTER_MAGIC = "PARE".getBytes(StandardCharsets.US_ASCII);
  private static final int DEFAULT_KEY_BITS = 256;

  @Override
  public FileEncryptionProperties getFileEncryptionProperties(Configuration fileHadoopConfig, Path tempFilePath,
      WriteContext fileWriteContext) {
    String footerKey = fileHadoopConfig.getTrimmed(FOOTER_KEY_PROPERTY_NAME);
    String columnKeys = fileHadoopConfig.getTrimmed(COLUMN_KEYS_PROPERTY_NAME);
    String uniformKey = fileHadoopConfig.getTrimmed(UNIFORM_KEY_PROPERTY_NAME);
    if (empty(footerKey) && empty(columnKeys) && empty(uniformKey)) {
      return null; // a plaintext write, as parquet-mr's
    }
    Configuration conf = new Configuration(fileHadoopConfig);
    if (!empty(footerKey) && empty(columnKeys) && empty(uniformKey)) {
      conf.unset(FOOTER_KEY_PROPERTY_NAME);
      conf.set(UNIFORM_KEY_PROPERTY_NAME, footerKey);
    } else if (!empty(columnKeys) && conf.get(COMPLETE_COLUMN_ENCRYPTION_PROPERTY_NAME) == null) {
      conf.setBoolean(COMPLETE_COLUMN_ENCRYPTION_PROPERTY_NAME, true);
    }
    for (String length : new String[] {KeyToolkit.DATA_KEY_LENGTH_PROPERTY_NAME,
        KeyToolkit.KEK_LENGTH_PROPERTY_NAME}) {
      if (conf.get(length) == null) {
        conf.setInt(length, DEFAULT_KEY_BITS);
      }
    }
    return super.getFileEncryptionProperties(conf, tempFilePath, fileWriteContext);
  }

  @Override
  public FileDecryptionProperties getFileDecryptionProperties(Configuration hadoopConfig, Path filePath) {
    FileDecryptionProperties permissive = super.getFileDecryptionProperties(hadoopConfig, filePath);
    if (!encryptionRequired(hadoopConfig)) {
      return permissive;
    }
    if (filePath != null) {
      requireEncryptedFooter(hadoopConfig, filePath);
    }
    return FileDecryptionProperties.builder().withKeyRetriever(permissive.getKeyRetriever()).build();
  }

  /** Whether a read with these settings must refuse plaintext files (see the class comment). */
  public static boolean encryptionRequired(Configuration conf) {
    String explicit = conf.getTrimmed(ENCRYPTION_REQUIRED);
    if (!empty(explicit)) {
      return Boolean.parseBoolean(explicit);
    }
    return !empty(conf.getTrimmed(FOOTER_KEY_PROPERTY_NAME)) || !empty(conf.getTrimmed(UNIFORM_KEY_PROPERTY_NAME))
        || !empty(conf.getTrimmed(COLUMN_KEYS_PROPERTY_NAME));
  }

  private static void requireEncryptedFooter(Configuration conf, Path path) {
    byte[] tail = new byte[ENCRYPTED_FOOTER_MAGIC.length];
    try {
      FileSystem fs = path.getFileSystem(conf);
      long length = fs.getFileStatus(path).getLen();
      if (length >= 2L * tail.length) {
        try (FSDataInputStream in = fs.open(path)) {
          in.readFully(length - tail.length, tail);
        }
      }
    } catch (FileNotFoundException e) {
      return; // the reader reports a missing file itself
    } catch (IOException e) {
      throw new ParquetCryptoRuntimeException("ppml: InvalidCiphertext: cannot read " + path + ": " + e.getMessage(), e);
    }
    if (!Arrays.equals(tail, ENCRYPTED_FOOTER_MAGIC)) {
      throw new ParquetCryptoRuntimeException("ppml: InvalidCiphertext: " + path + " is not PME Parquet with an "
          + "encrypted footer (plaintext, plaintext-footer or truncated) where encrypted Parquet is required ("
          + ENCRYPTION_REQUIRED + ", or a key named for the read); refusing to read it");
    }
  }

  private static boolean empty(String value) {
    return value == null || value.isEmpty();
  }
}
