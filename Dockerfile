FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY domain domain
COPY application application
COPY infrastructure infrastructure
COPY projections projections
COPY api api
RUN pip install --no-cache-dir .
EXPOSE 4000
CMD ["moneta", "serve", "--host", "0.0.0.0", "--port", "4000"]
