"""The wire: the event contracts as typed models, and the Avro framing that carries them."""
