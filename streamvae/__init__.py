"""streamvae: streaming multi-site anomaly detection over Kafka.

A site-conditioned Student-t VAE with the implicit optimal prior scores every
sensor record; see README.md for the architecture.
"""

__version__ = "0.1.0"
