import torch

from bids_infantseg.model.quicknat import QuickNAT, QuickNATConfig


def test_paper_configuration_has_published_size():
    net = QuickNAT(QuickNATConfig(num_classes=28))
    params = sum(p.numel() for p in net.parameters())
    assert 3.3e6 < params < 3.7e6  # QuickNAT: ~3.5 M parameters with 64 filters, 5x5 kernels


def test_output_shape_and_unpooling_restores_resolution():
    net = QuickNAT(QuickNATConfig(num_classes=5, num_filters=4)).eval()
    x = torch.randn(2, 1, 48, 32)
    assert net(x).shape == (2, 5, 48, 32)


def test_squeeze_excitation_variants_run():
    for mode in ("cse", "sse", "csse"):
        net = QuickNAT(QuickNATConfig(num_classes=3, num_filters=4, se_block=mode)).eval()
        assert net(torch.randn(1, 1, 16, 16)).shape == (1, 3, 16, 16)


def test_replace_classifier_keeps_encoder_weights():
    net = QuickNAT(QuickNATConfig(num_classes=10, num_filters=4))
    encoder_weight = net.encoders[0].conv1.weight.clone()
    net.replace_classifier(3)
    assert net.classifier.out_channels == 3 and net.cfg.num_classes == 3
    assert torch.equal(net.encoders[0].conv1.weight, encoder_weight)
