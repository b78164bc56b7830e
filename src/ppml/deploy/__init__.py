"""Deployment artefacts shipped as package data: Kubernetes pod templates for Spark and the
Kubernetes manifests of the services.

:mod:`ppml.deploy.k8s` renders the driver and executor pod templates that
``ppml submit --master k8s://… --deploy-mode cluster`` hands to spark-submit, with the TEE's
resources, secrets mounted as files and a restricted security context. :mod:`ppml.deploy.manifests`
renders the kustomize tree ``ppml/deploy/kustomize`` (the KMS/AS and the Spark jobs namespace; dev
and prod overlays) for ``ppml deploy render``. Both depend only on :mod:`ppml.errors`, so the
Spark integration can use them without a cycle.
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
