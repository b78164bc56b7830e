package org.ppml.envelope;

import java.io.IOException;

/**
 * The one opaque failure of reading an envelope: a wrong key, a flipped bit, a truncation, reordered
 * segments and a malformed header all give the same message, as Python's {@code InvalidCiphertext}
 * does ({@code ppml/errors.py}), so the error is no oracle for an attacker. The message names the file
 * and reads like Python's: {@code ppml: InvalidCiphertext: PATH: cannot decrypt: ...}.
 */
public class CiphertextException extends IOException {
  private static final long serialVersionUID = 1L;
  private final String error;

  private CiphertextException(String error, String message) {
    super("ppml: " + error + ": " + message);
    this.error = error;
  }

  /** The data could not be authenticated or parsed. */
  public static CiphertextException invalid(String source) {
    return new CiphertextException("InvalidCiphertext",
        where(source) + "cannot decrypt: wrong key, or the data was altered or truncated");
  }

  /** The input does not start with ppml's magic bytes. */
  public static CiphertextException notAnEnvelope(String source) {
    return new CiphertextException("NotAnEnvelope", where(source) + "not a ppml encrypted file (no PPML header)");
  }

  /** The ppml error name: {@code InvalidCiphertext} or {@code NotAnEnvelope}. */
  public String error() {
    return error;
  }

  private static String where(String source) {
    return source == null || source.isEmpty() ? "" : source + ": ";
  }
}
