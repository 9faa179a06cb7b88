"""Prompts as AUTOMATIC1111 users write them (issue 13).

- :mod:`.parser`: A1111's attention syntax ``(x)``, ``[x]``, ``(x:w)``, escapes, ``BREAK``, and the
  ``<lora:name:weight>`` extra-network tags;
- :mod:`.weighting`: 75-token chunks (BREAK, comma backtrack) and emphasis on any CLIP-style text
  encoder, the way A1111's ``sd_hijack_clip`` does it;
- :mod:`.styles`: A1111's ``styles.csv``;
- :mod:`.embeddings`: textual-inversion embeddings used by file name;
- :mod:`.lora`: LoRA files applied for one request through diffusers/peft.

Light on purpose: the parser and styles import no torch.
"""
