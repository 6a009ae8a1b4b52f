# Sourced by the scripts: environment for fast, quiet, loopback-only runs.
# Byte-code caching: these machines set PYTHONDONTWRITEBYTECODE=1, which makes every
# datacube/odc-stats start recompile for seconds; cache byte code under .cache instead.
_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
unset PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX="${PYTHONPYCACHEPREFIX:-$_root/.cache/pycache}"
export PATH="$_root/.venv/bin:$PATH"
export VIRTUAL_ENV="$_root/.venv"
# dask dashboards and servers bind to loopback only
export DASK_DISTRIBUTED__SCHEDULER__DASHBOARD__ENABLED="${DASK_DISTRIBUTED__SCHEDULER__DASHBOARD__ENABLED:-false}"
