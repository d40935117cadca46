"""The autoencoder as plain torch: encoders, decoders, objectives, and the layers around them."""
