# The router's image: what manifests/chart runs (`inference-router serve --kubernetes`). Build it with
# `make image`: pip builds the project's wheels on the build machine (from its own index, mirror or
# wheelhouse) into build/wheelhouse, the only thing this context holds, so the build needs no network.
# BASE: a Debian-like image with Python 3.11 and its venv module. The official slim image by default;
# `make image` makes one from Debian's own packages where that cannot be pulled.
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
LABEL io.inference-router.stage=build
COPY build/wheelhouse /wheelhouse
# a venv: Debian's own python3 refuses pip into the system (PEP 668); pip itself stays out of the image
RUN python3 -m venv /opt/inference-router \
 && /opt/inference-router/bin/pip install --no-cache-dir --no-index --find-links /wheelhouse inference-router \
 && /opt/inference-router/bin/pip uninstall --yes pip setuptools

FROM ${BASE}
ENV PATH=/opt/inference-router/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --gid 10001 router \
 && useradd --uid 10001 --gid router --no-create-home --shell /usr/sbin/nologin router
# owned by root and read-only to the router: the chart also mounts the root filesystem read-only
COPY --from=build /opt/inference-router /opt/inference-router
USER 10001:10001
EXPOSE 8080 8443 9090
ENTRYPOINT ["inference-router"]
CMD ["serve", "--kubernetes"]
