"""The kata: the shop split from a modular monolith into services, one step at a time.

``kata.steps`` says what each step is; ``python -m kata`` moves a context's data between
databases and builds the step-by-step git branches. docs/kata/ is the learner's guide.
"""
