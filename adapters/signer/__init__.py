"""Signing keys kept in files (``FileSigner``)."""

from adapters.signer.files import FileSigner, generate_key_file

__all__ = ["FileSigner", "generate_key_file"]
