"""A minimal model card for folders written by :func:`save_pretrained` without a card.

Release folders get a full card rendered by the export step from the templates in
``metaug_training/model_cards/``; this one only makes every folder self-describing and Hub-valid.
"""

from __future__ import annotations

from .config import EncoderConfig


def minimal_card(config: EncoderConfig) -> str:
    """Model-card text (YAML front matter + Markdown) describing ``config``."""
    prov = config.provenance or {}
    trained = ", ".join(f"{k}: {v}" for k, v in sorted(prov.items())) or "untrained (random initialisation)"
    return f"""---
library_name: metaug-features
license: mit
tags:
- metaug
- self-supervised-learning
- feature-extraction
- image-feature-extraction
pipeline_tag: image-feature-extraction
---

# MetAug encoder ({config.architecture}, width {config.width})

Split encoder with views {', '.join(config.views)}; default feature layer `{config.default_layer}`.
Training record: {trained}.

```python
from metaug_features import load_encoder
encoder = load_encoder("path/to/this/folder")
features = encoder.extract(["image.jpg"])
```
"""
