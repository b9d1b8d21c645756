import pytest
import torch

from flash_vstream_hf.tiny import tiny_config, tiny_model, tiny_processor


@pytest.fixture(scope="session")
def config():
    return tiny_config()


@pytest.fixture(scope="session")
def model(config):
    return tiny_model(config)


@pytest.fixture(scope="session")
def processor(config):
    return tiny_processor(config)


@pytest.fixture
def frames(config):
    """A function returning `count` random preprocessed frames `[batch, count, 3, H, W]`."""
    size = config.vision_config.image_size

    def make(count: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return torch.randn(batch, count, 3, size, size, generator=generator)

    return make
