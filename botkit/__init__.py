"""botkit: customer-service chatbots grounded in a live-editable knowledge base."""

__version__ = "0.1.0"
