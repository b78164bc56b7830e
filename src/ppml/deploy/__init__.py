"""Deployment: container images, Kubernetes pod templates for Spark, the services' Kubernetes
manifests, and checks of a running deployment.

:mod:`ppml.deploy.images` describes the base image's layout (``deploy/images/base/Dockerfile``);
:mod:`ppml.deploy.context` writes an application image's signed build context (``ppml image
context``): a Dockerfile and a Gramine manifest that trusts the application, Python, the JVM and
Spark at their image paths. :mod:`ppml.deploy.k8s` renders the driver and executor pod templates
that ``ppml submit --master k8s://… --deploy-mode cluster`` hands to spark-submit, with the TEE's
resources, secrets mounted as files and a restricted security context. :mod:`ppml.deploy.manifests`
renders the kustomize tree ``ppml/deploy/kustomize`` (the KMS/AS and the Spark jobs namespace; dev
and prod overlays) for ``ppml deploy render``. :mod:`ppml.deploy.doctor` (``ppml doctor``) checks
a running deployment from the outside. The Grafana dashboard is ``ppml/deploy/grafana``.

The package sits above :mod:`ppml.tee` (the image context builds and signs Gramine manifests) and
below the Spark integration, which renders the pod templates; importing it imports neither
:mod:`ppml.deploy.context` (nor, through it, the Gramine manifest code) nor the doctor, which uses
the KMS and attestation clients.
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
