# A ppml application image, written by `ppml image context` (@CONTEXT_FORMAT@).
#
#   docker build -t IMAGE .
#
# Nothing secret is needed to build it: the enclave was signed when this context was written, and
# the signing key is not here. The Gramine manifest in enclave/ trusts the application at
# @APP_DIR@ and the base image's runtime (Python, the venv with ppml and pyspark, the JVM,
# Gramine's glibc) at the paths they have in the base image, with their SHA-256: build FROM the
# very base image the context was made in (pin it by digest), or the enclave refuses to load the
# files that changed. Register enclave/'s measurement (measurement.txt) with the attestation
# service before the first job.
ARG PPML_BASE_IMAGE=@BASE_IMAGE@
FROM ${PPML_BASE_IMAGE}
COPY --chown=0:0 app/ @APP_DIR@/
COPY --chown=0:0 enclave/ @ENCLAVE_DIR@/
USER @UID@:@GID@
WORKDIR @APP_DIR@
