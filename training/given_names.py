"""Common given names and surnames for finding people's names that no cue introduces.

Hand-curated for :mod:`training.redact` (written for botkit, not copied from a data set): the
given names that head the published birth-name statistics of the US (SSA), UK (ONS), Ireland
(CSO), Germany (GfDS), France (INSEE), Spain (INE), Italy (ISTAT), the Netherlands (SVB),
Poland (GUS), the Nordic countries, Portugal/Brazil, Russia, India, Japan and the Arab world,
and the surnames that head the same countries' surname counts. Lower case, accents kept
(lookup also tries the accent-free form). Words that are more often something else in support
chats ("Will", "May", "Grace", "Amber", "Rose", "Sage", "Austin", "Paris", "Eve", "Mark"...)
are left out on purpose: :data:`AMBIGUOUS` lists them, and they are only taken after a cue.
"""

from __future__ import annotations

GIVEN_NAMES: frozenset[str] = frozenset("""
aaron abigail adam adrian agnieszka ahmed aidan aiden aisha aleksander alessandro alessia alex alexander alexandra
alexandre alexis alfie ali alice alicia alina alison amelia amir amy ana anastasia anders andrea andreas andrei andrew
andrzej aneta angela angelika anja anna annabel anne anne-marie annette anouk antoine anton antonio aoife arjun
arnaud arthur astrid aurélie ayesha barbara bartosz beatriz ben benjamin bernard bettina bianca björn brian bruno
camila camille carla carlos carmen caroline carsten catarina catherine cecilia charlotte chiara chloe chloé christian
christina christine christoph christopher ciara claire clara claudia colin connor daniel daniela daniele danielle
david davide deborah deepak denis dennis diana diego dmitri dmitry dominik dorota edward elena eleni elias elin
elisa elisabeth eliza elizabeth ella ellie elsa emil emilia emily emma enrique eric erik erika esther ethan eva
ewa fabian fatima federica felipe felix fernando filip finn fiona florian francesca francesco francisco françois
françoise frederik gabriel gabriela gareth georg george georgios gerard giacomo gianluca giorgia giovanni giulia
giuseppe greta grzegorz guillaume gustav hamza hana hannah hannes hans harry heike heinz helen helena henrik henry
hiroshi holger hugo ian igor ilse inês inga ingrid irene isaac isabel isabella isabelle ivan jacek jack jacob
jakob jakub james jan jana jane janet jasper javier jean jennifer jens jeroen jessica joanna joaquín joe johan
johanna johannes john jonas jonathan jordi jorge josé josef joseph joshua joão juan julia julian julie julien
jürgen kai karen karim karin karl karolina kasia kasper katarzyna kate katharina katherine kathrin katie kenji
kevin klaus krzysztof kumar lara lars laura lauren laurent lea leah lena leo leon leonie liam lina linda lisa
lotte louis louise luca lucas lucia lucía luis luisa lukas luke łukasz magdalena maja malik małgorzata manuel
manon marc marcel marco marcus margaret margot maria marie marina mario marion marta martin martina mary maría
mateo mathieu matteo matthew matthias maximilian maxime mehmet melanie mia michael michaela michał michele miguel
mikael mohamed mohammad mohammed monika nadia naomi natalia natalie nathalie nicola nicolas niamh niels nikolai
nina noah noemi nora oliver olivia omar oskar pablo paolo patricia patrick paul paula paulina pedro peter petra
philippe pierre piotr priya rachel rafael rahul raquel rebecca riccardo richard robert roberto rodrigo rohan
ryan rui sabine sam samantha samuel sandra sara sarah sebastian sean sergei sergio siobhán simon simone sofia
sofie sophia sophie søren stefan stefano stephanie steven susanne svetlana sven sylvie tanja thomas tim timo
tobias tom tomasz torsten ulrike ursula valentina valeria vanessa vera victor vincent vittorio wei wojciech
wolfgang xavier yasmin yuki yusuf zoe zoë zofia ólafur
abdul abdullah ada adaeze adebayo adeola adriana agata agnes ahmad aiko akira akosua alan albert alberto aleksandra
alessio alfred alicja alma amaka amanda amara ambre amina amit ananya andré andrés ángel angelo anil anita anja
anjali ann anneke annika antonia ari arne arvid asha ashley åsa astrid aurora axel ayumi baptiste barış beatrice
benedikt bernd birgit bjørn blanca bogdan boris brandon brigitte bronwyn caitlin callum carina carl carlo carolina
caoimhe casper cathal cédric celia chidi chinedu chioma chiara chris christophe cillian claes clément conor cormac
cristina cristian damian damien dan dana daniël dara darius dawid declan deepika denise derek desmond dimitri
dirk divya dominika donal doris dylan ebru edith eduardo eilidh eleanor elif elke ellen eloise elías emeka emilie
emilio emre enzo erin ernesto esra estelle eugenia ezra fabio fatma federico femi filipa finlay florence folake
frank franziska frida gabriele gaspard gemma gerhard gianni gilles gonçalo gosia gunnar gustavo hakan halima
hanna hannelore harald haruka hassan hayley heidi helga hélène henrike hideo hilde huda hugh hyun ibrahim ifeoma
ignacio ilona imogen inès ingeborg ioana iryna isabela ismail iwona jacqueline jade jakub janina janne jarosław
jasmin javier jayden jenny jesper jesús ji-woo jiho joanne joel johan jolanta jonah jorge josefine josephine
joséphine jules julieta justyna kacper kai kamil kamila karim karolina kasimir katja kazuki keith kemal kenneth
kerstin khalid kirsten kiran klara kofi kristina kristian kwame lachlan lakshmi lars leandro lennart leonardo
leticia lewis liesbeth lieke lilian linnea lionel lorenzo lorna lotta luana lucie ludovic luka łucja magnus
mahmoud malgorzata manon marcin marek mariana marianne mariusz marko marlene martha marthe mateus mateusz
matilda mattias maud maurice max maya megan mei mercedes michelle mikołaj milan milena mirela miriam mohan
moritz muhammad nadine nam nanami naoki natalia neha nerea nick nicole nikhil nikola nils nnamdi noa noor norbert
nuno oisín ola olga olumide oluwaseun orla oscar pádraig pál patrícia pauline pavel pawel paweł pekka per pieter
pilar pooja przemysław radek radosław rajesh ravi regina reinhard renata renée ricardo rita robin rocío roisín
róisín roman rosa ruairí ruth sabrina sadia saoirse sakura samira sanjay santiago sara saskia satoshi seamus
sebastián seo-yeon shanthi shauna shirin shreya shun sibylle sigrid silvia sinéad sinead siobhan sipho siddharth
snežana solveig sonia soo-ah stanisław stella stig sunita susana sven szymon taiwo takumi tamara tariq teresa
thabo théo thierry tiago tobiah tomás tomas tove tunde ulla ursula usha valentin valérie vasil veronika vicente
viktor vikram viktoria vinh vlad wiebke wiktoria willem xin yan yara yasmine yetunde yosef youssef yu yui yusra
yvonne zainab zara zeynep zhen zsofia zuzanna
""".split())

SURNAMES: frozenset[str] = frozenset("""
andersson bauer becker bianchi brown byrne colombo costa davies dubois dupont durand evans fernández
ferrari ferreira fischer garcía gonzález hansen hoffmann ivanov jansen jensen johansson johnson jones kowalski
kowalczyk lewandowski lópez martin martínez meyer moreau müller murphy nielsen nowak o'brien o'connor pereira
petit petrov rodríguez romano rossi russo sánchez santos schmidt schneider schulz silva smirnov smith suzuki
sato takahashi tanaka taylor visser wagner walsh weber williams wilson wiśniewski wójcik wright yamamoto
""".split())

CHINESE_SURNAMES: frozenset[str] = frozenset(
    "wang zhang liu chen yang huang zhao zhou xu wu zhu guo lin gao luo zheng liang xie song tang".split())
"""Written first in romanised Chinese names ("Zhang Wei"); only taken before a capitalised word."""

AMBIGUOUS: frozenset[str] = frozenset("""
will may june april august grace amber rose sage hope faith joy ivy holly lily olive ruby dawn summer autumn
jordan paris austin dallas sydney florence georgia virginia victoria chelsea brooklyn lincoln eve mark bill pat
art frank sunny chase hunter drew gene iris jasmine angel christian page royal major king prince
""".split())
"""Given names that are also ordinary words or places; never taken without a cue."""

FAMILY_FIRST_SURNAMES: frozenset[str] = frozenset("""
nguyen nguyễn tran trần pham phạm hoang hoàng phan vu vũ dang đặng bui bùi huynh huỳnh ngo ngô duong dương
kim choi jung kang yoon cho jang
""".split())
"""Vietnamese and Korean family names, written first ("Nguyễn Thị Lan"); like Chinese surnames,
only taken before a capitalised word."""

