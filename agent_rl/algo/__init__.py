"""Algorithm math as pure functions: advantages and reward shaping, policy losses, masked logprobs, batch tensors."""
