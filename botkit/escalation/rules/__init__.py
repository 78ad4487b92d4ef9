"""One module per rule type, each with its config model beside its builder;
``botkit.escalation.registry`` lists them."""
