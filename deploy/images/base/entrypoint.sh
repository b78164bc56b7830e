#!/bin/bash
# The Spark-on-Kubernetes entrypoint of the ppml base image (/opt/entrypoint.sh), modelled on
# Spark's own (resource-managers/kubernetes/docker/src/main/dockerfiles/spark/entrypoint.sh),
# which the pyspark wheel does not ship. Spark gives a pod `driver ARGS…` or `executor`; the
# executor's settings come in SPARK_* variables. Under Gramine this runs inside the enclave,
# started by `ppml tee gramine-entry spark-pod` after attestation. Not run on a cluster here.
set -euo pipefail
: "${SPARK_HOME:?SPARK_HOME is not set}"

case "${1:-}" in
  driver)
    shift
    exec "${SPARK_HOME}/bin/spark-submit" \
      --conf "spark.driver.bindAddress=${SPARK_DRIVER_BIND_ADDRESS}" \
      --conf "spark.executorEnv.SPARK_DRIVER_POD_IP=${SPARK_DRIVER_BIND_ADDRESS}" \
      --deploy-mode client "$@"
    ;;
  executor)
    shift
    java_opts=()
    for i in 0 1 2 3 4 5 6 7; do
      name="SPARK_JAVA_OPT_${i}"
      if [ -n "${!name:-}" ]; then java_opts+=("${!name}"); fi
    done
    classpath="${SPARK_CONF_DIR:-${SPARK_HOME}/conf}:${SPARK_HOME}/jars/*"
    if [ -n "${SPARK_EXTRA_CLASSPATH:-}" ]; then classpath="${classpath}:${SPARK_EXTRA_CLASSPATH}"; fi
    exec "${JAVA_HOME}/bin/java" "${java_opts[@]}" \
      -Xms"${SPARK_EXECUTOR_MEMORY}" -Xmx"${SPARK_EXECUTOR_MEMORY}" -cp "${classpath}" \
      org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \
      --driver-url "${SPARK_DRIVER_URL}" --executor-id "${SPARK_EXECUTOR_ID}" \
      --cores "${SPARK_EXECUTOR_CORES}" --app-id "${SPARK_APPLICATION_ID}" \
      --hostname "${SPARK_EXECUTOR_POD_IP}" --resourceProfileId "${SPARK_RESOURCE_PROFILE_ID}" \
      --podName "${SPARK_EXECUTOR_POD_NAME}"
    ;;
  *)
    exec "$@"
    ;;
esac
