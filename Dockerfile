FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY consentgate consentgate
COPY streams streams
COPY schemas schemas
COPY connectors connectors
RUN pip install --no-cache-dir .
USER nobody
ENTRYPOINT ["consentgate"]
