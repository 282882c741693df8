"""The attention family: FlashInfer's single and batch decode/prefill wrappers and MLA decode."""
