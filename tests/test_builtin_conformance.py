"""Every built-in component passes the conformance kit, exactly as a third-party one would."""

from v2a.testing import from_registry, parametrize_with_checks

# Each built-in plug-in component is listed here, with its default options; add new built-ins
# to this list when they land (with small options if the defaults make a check slow).
BUILTINS = [
    from_registry("audio_encoder", "mel"),
    from_registry("reranker", "none"),
    from_registry("audio_encoder", "codec_latents",
                  codec={"plugin": "spectral_rvq", "n_codebooks": 2, "codebook_size": 16}),
    from_registry("audio_encoder", "codec_latents",
                  codec={"plugin": "dac", "model": "16khz", "weights": "none", "encoder_dim": 8,
                         "decoder_dim": 32, "n_codebooks": 2, "codebook_size": 64}),
]
# The other built-ins run the kit in their own test files under tests/plugins/.


@parametrize_with_checks(BUILTINS)
def test_builtin_conformance(factory, check):
    check(factory)
