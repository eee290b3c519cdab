"""The Hugging Face transformers backend: any ``AutoModelForImageTextToText`` with a chat
template. ``text`` renders prompts and resolves words, ``runtime`` loads the model, ``unshared``
runs one full sequence per prompt, ``encode``/``shared``/``prefix`` compute shared prompt
prefixes and repeated images once, ``backend`` puts them together. Import the modules directly:
this package stays light so that the driver never imports torch."""
