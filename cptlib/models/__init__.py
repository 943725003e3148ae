"""Every model the study trains, built by name: ``build_model(name, num_classes, **options)``.

Names and what each trains:

- any timm ViT (``vit_base_patch16_224.orig_in21k``, ``vit_tiny_patch16_224``, ...): VPT prompts
  + head;
- ``quick``: VPT prompts + head on the embedded small backbone;
- ``clip:<open_clip arch>`` (``clip:ViT-L-14``, ``clip:RN50``, ...): the CoOp text context;
- any timm ResNet (``resnet50``, ``resnet10t``, ...): everything (full fine-tune);
- ``lora:<timm vit name>``: LoRA on the attention + head;
- ``minilm``, ``bert-base-uncased``: peft prompt embeddings + head.

See ``registry`` for the options, ``list_models()`` for the descriptions, ``pretrained`` for the
checkpoint behind each name, ``adapters`` for the per-c files. Modules: ``base`` (the model
contract), ``vit``, ``clip``, ``resnet``, ``lora``, ``text`` (one family each),
``quick_backbone`` (the embedded backbone).
"""

from cptlib.models.adapters import load_adapter, read_adapter_metadata, save_adapter
from cptlib.models.base import CPTModel, count_trainable
from cptlib.models.pretrained import PAPER_WEIGHTS, PretrainedWeightsUnavailable
from cptlib.models.registry import build_model, list_models, trainable_table

__all__ = [
    "CPTModel",
    "PAPER_WEIGHTS",
    "PretrainedWeightsUnavailable",
    "build_model",
    "count_trainable",
    "list_models",
    "load_adapter",
    "read_adapter_metadata",
    "save_adapter",
    "trainable_table",
]
