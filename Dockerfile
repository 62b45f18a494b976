# The grand-challenge container: /input in, /output out (petloop gc).
# Build from the repository root; the bundled model set (petloop/models/phantom) is package data:
#   docker build -t petloop .
#   docker run --rm --gpus all --network none -v $PWD/in:/input -v $PWD/out:/output petloop
FROM python:3.11-slim
WORKDIR /opt/petloop
COPY pyproject.toml constraints.txt README.md ./
COPY petloop ./petloop
RUN pip install --no-cache-dir -c constraints.txt torch==2.14.1 torchvision==0.29.1 \
 && pip install --no-cache-dir -c constraints.txt .
ENV nnUNet_n_proc_DA=2
ENTRYPOINT ["petloop", "gc", "--input", "/input", "--output", "/output", "--time-budget", "40"]
