"""trustfl as a Flower app: the ServerApp and ClientApp are trustfl's own."""
