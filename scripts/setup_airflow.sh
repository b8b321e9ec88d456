#!/usr/bin/env bash
# make airflow: Airflow 3 in its own venv inside the project's environment (idempotent).
#   chroot mode: /opt/airflow in the Debian 13 root filesystem; venv mode: .venv-airflow/
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$CSCNN_ROOT"
bash scripts/setup.sh
want="$(sha256sum < requirements-airflow.txt | cut -d' ' -f1)"
if [ "$(cscnn_mode)" = venv ]; then venv="$CSCNN_ROOT/.venv-airflow"; else venv=/opt/airflow; fi
bin/env bash -c "
  set -eo pipefail
  if [ -f $venv/.cscnn-stamp ] && [ \"\$(cat $venv/.cscnn-stamp)\" = '$want' ]; then
    echo '[cscnn setup] Airflow venv $venv is up to date'; exit 0
  fi
  echo '[cscnn setup] installing Airflow (requirements-airflow.txt) into $venv'
  python3 -m venv $venv
  $venv/bin/pip install -q --progress-bar off -r '$CSCNN_ROOT/requirements-airflow.txt' > /tmp/airflow-pip.log 2>&1 \
    || { tail -30 /tmp/airflow-pip.log; exit 1; }
  echo '$want' > $venv/.cscnn-stamp
  echo \"[cscnn setup] Airflow \$($venv/bin/python -c 'import airflow; print(airflow.__version__)') ready\"
"
