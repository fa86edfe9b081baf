"""Data for GAN experiments: toy mixtures of Gaussians, offline digits, image pipelines.

``ring`` and ``grid`` sample the 2-D mixtures of the mode-collapse literature
(Metz et al. 2017; VEEGAN; PacGAN); ``ring_centers`` / ``grid_centers`` give
their mode centres for ``jgan.metrics.mode_coverage``. ``mixture`` builds a
named preset (``"ring"``, ``"ring_pacgan"``, ``"grid"``) as a ``MixtureSpec``
and ``sample_mixture`` samples it. ``digits`` loads scikit-learn's bundled
8x8 handwritten digits, upsampled and scaled to ``[-1, 1]`` (no network).

``stacked_digits`` samples three independent offline digits as the channels of
one image (1,000 modes, counted with ``jgan.metrics.stacked_mode_coverage``):
a jittable, offline analogue of Stacked MNIST (Metz et al. 2017; VEEGAN),
not the same data. ``stacked_mnist`` builds Stacked MNIST itself from
TensorFlow Datasets' MNIST.

Image input pipelines yield numpy batches such as ``{"x": images, "label":
labels}`` with a global ``batch_size`` split evenly across processes (and,
with ``devices=``, reshaped for ``jax.pmap``): ``array_batches`` over
in-memory arrays, ``tfds_images`` / ``tfds_unpaired_images`` over
TensorFlow Datasets (MNIST, Fashion-MNIST, CIFAR-10, LSUN church-outdoor with
images only, CycleGAN; TensorFlow is imported only when they are called), and
``image_dataset`` serving all of them by name (``"digits"`` offline). ``shard_for_devices`` and ``prefetch`` help a
training loop.
"""

from jgan.data._digits import digits
from jgan.data._images import IMAGE_DATASETS
from jgan.data._images import ImageDatasetSpec
from jgan.data._images import image_dataset
from jgan.data._images import image_dataset_spec
from jgan.data._pipeline import array_batches
from jgan.data._pipeline import check_images
from jgan.data._pipeline import prefetch
from jgan.data._pipeline import shard_for_devices
from jgan.data._stacked import stacked_digits
from jgan.data._stacked import stacked_mnist
from jgan.data._tfds import UNPAIRED_DATASETS
from jgan.data._tfds import tfds_images
from jgan.data._tfds import tfds_unpaired_images
from jgan.data._toy import MixtureSpec
from jgan.data._toy import grid
from jgan.data._toy import grid_centers
from jgan.data._toy import mixture
from jgan.data._toy import ring
from jgan.data._toy import ring_centers
from jgan.data._toy import sample_mixture

__all__ = [
    "array_batches",
    "check_images",
    "digits",
    "grid",
    "grid_centers",
    "image_dataset",
    "image_dataset_spec",
    "IMAGE_DATASETS",
    "ImageDatasetSpec",
    "mixture",
    "MixtureSpec",
    "prefetch",
    "ring",
    "ring_centers",
    "sample_mixture",
    "shard_for_devices",
    "stacked_digits",
    "stacked_mnist",
    "tfds_images",
    "tfds_unpaired_images",
    "UNPAIRED_DATASETS",
]
