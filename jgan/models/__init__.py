"""Flax linen networks for GANs and adapters to jgan's apply conventions.

This is the only part of jgan that imports flax. ``make_apply`` turns a module
into the ``apply`` function that ``jgan.steps`` takes:

- stateless: ``apply(params, x, *args) -> out`` (the MLPs);
- stateful: ``apply(params, model_state, x, *args) -> (out, new_model_state)``
  (the DCGAN networks, whose BatchNorm statistics live in ``model_state``).

Networks: the MLPs of the mixture experiments, DCGAN's, Metz et al.'s small
stacked-MNIST networks (``StackedGenerator`` / ``StackedDiscriminator``, the
1,000-mode benchmark), a conditional DCGAN and projection discriminator,
CycleGAN's, the digit classifier (FID/IS and mode counting) and the FID
InceptionV3.

Example::

    generator = DCGANGenerator(image_size=32, channels=3)
    g_params, g_state = init_model(generator, key, jnp.zeros((1, 100)))
    g_apply = make_apply(generator, stateful=True)
    images, g_state = g_apply(g_params, g_state, z)
"""

from jgan.models._apply import init_model
from jgan.models._apply import make_apply
from jgan.models._apply import make_nnx_apply
from jgan.models._apply import merge_nnx_module
from jgan.models._apply import split_nnx_module
from jgan.models._apply import split_variables
from jgan.models._classifier import ClassifierOutput
from jgan.models._classifier import DigitClassifier
from jgan.models._classifier import load_classifier
from jgan.models._classifier import make_classifier_fn
from jgan.models._classifier import save_classifier
from jgan.models._conditional import ConditionalDCGANGenerator
from jgan.models._conditional import ProjectionDiscriminator
from jgan.models._conditional import check_labels
from jgan.models._cyclegan import PatchGANDiscriminator
from jgan.models._cyclegan import ResnetBlock
from jgan.models._cyclegan import ResnetGenerator
from jgan.models._cyclegan import reflection_pad
from jgan.models._cyclegan_shared import SharedEncoderTranslator
from jgan.models._cyclegan_shared import make_shared_generators
from jgan.models._dcgan import DCGANDiscriminator
from jgan.models._dcgan import DCGANGenerator
from jgan.models._inception import FID_WEIGHTS_FILENAME
from jgan.models._inception import FID_WEIGHTS_NATIVE_FILENAME
from jgan.models._inception import FID_WEIGHTS_URL
from jgan.models._inception import InceptionOutput
from jgan.models._inception import InceptionV3
from jgan.models._inception import convert_fid_inception_weights
from jgan.models._inception import load_fid_inception
from jgan.models._inception import make_inception_features
from jgan.models._inception import read_torch_state_dict
from jgan.models._inception import save_fid_inception
from jgan.models._mlp import MLPDiscriminator
from jgan.models._mlp import MLPGenerator
from jgan.models._stacked import METZ_HALF_FEATURES
from jgan.models._stacked import METZ_QUARTER_FEATURES
from jgan.models._stacked import StackedDiscriminator
from jgan.models._stacked import StackedGenerator
from jgan.models._upsample import ConvTranspose
from jgan.models._upsample import subpixel_conv_transpose

__all__ = [
    "check_labels",
    "ClassifierOutput",
    "ConditionalDCGANGenerator",
    "ConvTranspose",
    "convert_fid_inception_weights",
    "DCGANDiscriminator",
    "DCGANGenerator",
    "DigitClassifier",
    "FID_WEIGHTS_FILENAME",
    "FID_WEIGHTS_NATIVE_FILENAME",
    "FID_WEIGHTS_URL",
    "InceptionOutput",
    "InceptionV3",
    "init_model",
    "load_classifier",
    "load_fid_inception",
    "make_apply",
    "make_classifier_fn",
    "make_inception_features",
    "make_nnx_apply",
    "make_shared_generators",
    "merge_nnx_module",
    "MLPDiscriminator",
    "METZ_HALF_FEATURES",
    "METZ_QUARTER_FEATURES",
    "MLPGenerator",
    "PatchGANDiscriminator",
    "ProjectionDiscriminator",
    "read_torch_state_dict",
    "reflection_pad",
    "ResnetBlock",
    "ResnetGenerator",
    "save_classifier",
    "save_fid_inception",
    "SharedEncoderTranslator",
    "split_nnx_module",
    "split_variables",
    "StackedDiscriminator",
    "StackedGenerator",
    "subpixel_conv_transpose",
]
