"""Deployment artefacts shipped as package data: Kubernetes pod templates for Spark.

:mod:`ppml.deploy.k8s` renders the driver and executor pod templates that
``ppml submit --master k8s://… --deploy-mode cluster`` hands to spark-submit, with the TEE's
resources, secrets mounted as files and a restricted security context. It depends only on
:mod:`ppml.errors`, so the Spark integration can use it without a cycle.

:mod:`ppml.deploy.doctor` (``ppml doctor``) checks a running deployment from the outside; it uses
the KMS and attestation clients and is not imported here.
"""

from __future__ import annotations

from ppml.deploy.k8s import (
    CA_BUNDLE_PATH,
    DRIVER_CONTAINER,
    ENCLAVE_MANIFEST_PATH,
    ENCLAVE_SIG_PATH,
    EXECUTOR_CONTAINER,
    KMS_CREDENTIALS_PATH,
    RPC_SECRET_PATH,
    SIMULATED_PLATFORM_KEY_PATH,
    SIMULATED_WARNING,
    ConfigMapFile,
    ImageFile,
    PodTemplateInputs,
    PodTemplates,
    SecretFile,
    check_spark_conf,
    pod_environment,
    pod_manifest,
    render_pod_templates,
)

__all__ = [
    "CA_BUNDLE_PATH",
    "DRIVER_CONTAINER",
    "ENCLAVE_MANIFEST_PATH",
    "ENCLAVE_SIG_PATH",
    "EXECUTOR_CONTAINER",
    "KMS_CREDENTIALS_PATH",
    "RPC_SECRET_PATH",
    "SIMULATED_PLATFORM_KEY_PATH",
    "SIMULATED_WARNING",
    "ConfigMapFile",
    "ImageFile",
    "PodTemplateInputs",
    "PodTemplates",
    "SecretFile",
    "check_spark_conf",
    "pod_environment",
    "pod_manifest",
    "render_pod_templates",
]
