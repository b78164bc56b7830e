package org.ppml.agent;

import java.io.IOException;

/**
 * A refusal or failure from the key agent. {@link #error()} is the ppml error class the agent named
 * ({@code InvalidCiphertext}, {@code KeyNotFound}, {@code TokenRejected}, {@code PermissionDenied},
 * {@code UsageError}, ...); the message never carries key material.
 */
public class KeyAgentException extends IOException {
  private static final long serialVersionUID = 1L;
  private final String error;

  public KeyAgentException(String error, String message) {
    super("ppml: " + error + ": " + message);
    this.error = error;
  }

  public String error() {
    return error;
  }
}
