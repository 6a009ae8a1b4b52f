# The worker image the Kubernetes Jobs in cfg/k8s run (registry.example.org/odc-ndvi-plugin:0.1.0):
# the locked stack (requirements/lock.txt) installed by the same script that scripts/demo
# and scripts/test run (scripts/bootstrap: Debian's libgdal-dev 3.6.2, uv, a Python 3.11
# venv), so the image runs exactly what CI tested.
#   docker build -t registry.example.org/odc-ndvi-plugin:0.1.0 .
FROM python:3.11.7-slim-bookworm

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    UV_NO_CACHE=1

# a compiler for the gdal==3.6.2 binding (built against Debian's libgdal, as on CI machines)
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential=12.9 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/odc-ndvi
COPY requirements/ requirements/
COPY scripts/ scripts/
COPY setup.cfg pyproject.toml README.md ./
COPY odc_ndvi_plugin/ odc_ndvi_plugin/
COPY cfg/ cfg/
RUN bash scripts/bootstrap && rm -rf /var/lib/apt/lists/*

ENV PATH=/opt/odc-ndvi/.venv/bin:$PATH \
    VIRTUAL_ENV=/opt/odc-ndvi/.venv \
    GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR
RUN useradd --create-home --uid 10001 ndvi
USER 10001
CMD ["odc-ndvi", "--help"]
