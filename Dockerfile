# The worker image: riskwatch without the embedded extras (it talks to Kafka and a ClickHouse server).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY detectors ./detectors
COPY streams ./streams
RUN pip install --no-cache-dir .
USER nobody
ENTRYPOINT ["riskwatch"]
CMD ["worker"]
