# The router's image: what manifests/chart runs (`inference-router serve --kubernetes`).
# Build: docker build -t REGISTRY/inference-router:0.1.0 .
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY router ./router
# the project and its runtime dependencies as wheels: no extras, no build tools in the image
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --system --gid 10001 router \
 && useradd --system --uid 10001 --gid router --no-create-home --shell /usr/sbin/nologin router
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index /wheels/*.whl && rm -rf /wheels
USER 10001:10001
EXPOSE 8080 8443 9090
ENTRYPOINT ["inference-router"]
CMD ["serve", "--kubernetes"]
