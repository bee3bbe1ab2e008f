"""The MedSynth-8 knowledge base (docs/medsynth.md §2).

One latent knowledge base, written as small vocabulary tables of real Chinese medical
terms, from which all eight task generators and the pre-training corpus are drawn. Each
disease has a standard (ICD-style) name, colloquial aliases, a body part, a department,
symptoms, drugs and examinations; each symptom has a core word (the CHIP-CDEE 主体词), a
body part, descriptors and a colloquial phrasing; drug indications are derived from the
diseases that use the drug. Everything is kept in tuples in table order, so nothing
depends on set iteration or ``hash()``.
"""

from __future__ import annotations

from dataclasses import dataclass

# name | core word | body part | descriptors | colloquial phrase
_SYMPTOMS = """
发热|发热||高,低,反复|发烧
咳嗽|咳嗽||阵发性,干性,剧烈|咳得厉害
咳痰|咳痰||黄色,白色,黏稠|有痰
流涕|流涕||清,脓性|流鼻涕
鼻塞|鼻塞|鼻|持续性,间断性|鼻子不通气
咽痛|疼痛|咽部|轻度,剧烈|嗓子疼
头痛|疼痛|头部|胀痛,搏动性,持续性|头疼
头晕|头晕||阵发性,持续性|头昏
胸痛|疼痛|胸部|压榨性,刺痛,持续性|胸口疼
胸闷|胸闷||阵发性,活动后|胸口发闷
心悸|心悸||阵发性,活动后|心慌
气促|气促||活动后,夜间|喘不上气
呼吸困难|呼吸困难||进行性,夜间|喘不过气
腹痛|疼痛|腹部|阵发性,持续性,隐痛,绞痛|肚子疼
腹胀|腹胀||餐后,持续性|肚子胀
腹泻|腹泻||水样,频繁|拉肚子
便秘|便秘||长期,顽固性|大便干
恶心|恶心||轻度,餐后|想吐
呕吐|呕吐||频繁,喷射性|吐了
反酸|反酸||餐后,夜间|泛酸水
烧心|烧灼感|胸骨后|餐后,夜间|心口烧
便血|便血||鲜红色,暗红色|大便带血
黑便|黑便||柏油样|大便发黑
食欲减退|食欲减退||明显|不想吃饭
乏力|乏力||全身,明显|没劲
消瘦|消瘦||明显,进行性|体重下降
多饮|多饮||明显|老是口渴
多尿|多尿||夜间,明显|尿多
尿频|尿频||明显,夜间|老想上厕所
尿急|尿急||明显|憋不住尿
尿痛|疼痛|尿道|烧灼样,排尿时|小便疼
血尿|血尿||肉眼,镜下|尿里有血
腰痛|疼痛|腰部|酸痛,绞痛,持续性|腰疼
关节痛|疼痛|关节|游走性,晨起,持续性|关节疼
关节肿胀|肿胀|关节|对称性,红肿|关节肿
晨僵|晨僵|关节|持续|早上手僵
皮疹|皮疹|皮肤|红色,散在,瘙痒性|起疹子
瘙痒|瘙痒|皮肤|剧烈,夜间|皮肤痒
水疱|水疱|皮肤|成簇,透明|起水泡
红肿|红肿|皮肤|局部,明显|发红发肿
眼红|充血|眼|明显,双侧|眼睛红
眼痛|疼痛|眼|胀痛,剧烈|眼睛疼
眼干|干涩|眼|持续性,晨起|眼睛干
视物模糊|视物模糊|眼|逐渐,突发|看东西模糊
耳痛|疼痛|耳部|持续性,剧烈|耳朵疼
耳鸣|耳鸣|耳部|持续性,间断性|耳朵嗡嗡响
听力下降|听力下降|耳部|逐渐,突发|耳朵听不清
牙痛|疼痛|牙齿|阵发性,夜间|牙疼
牙龈出血|出血|牙龈|刷牙时,反复|刷牙出血
口腔溃疡|溃疡|口腔|反复,多发|嘴里起泡
口臭|口臭|口腔|明显|嘴里有味
声音嘶哑|嘶哑|喉部|持续性,晨起|嗓子哑
失眠|失眠||入睡困难,早醒|睡不着
情绪低落|情绪低落||持续,明显|心情不好
水肿|水肿|下肢|凹陷性,对称性|腿肿
颈部疼痛|疼痛|颈部|酸痛,持续性|脖子疼
肢体麻木|麻木|肢体|单侧,阵发性|手脚发麻
抽搐|抽搐|肢体|阵发性,全身性|抽筋
震颤|震颤|手部|静止性,单侧|手抖
口角歪斜|歪斜|口角|突发,单侧|嘴歪
神经痛|疼痛|神经|烧灼样,针刺样|像针扎一样疼
乳房胀痛|胀痛|乳房|周期性,双侧|胸部胀痛
腮腺肿大|肿大|腮腺|单侧,双侧|腮帮子肿
月经不调|月经不调||周期紊乱|月经不准
白带异常|白带异常||量多,有异味|白带多
多毛|多毛|皮肤|明显|毛发多
盗汗|盗汗||夜间|晚上出汗
咯血|咯血||少量,痰中带血|咳血
黄疸|黄染|皮肤|进行性,轻度|皮肤发黄
多汗|多汗||明显|爱出汗
畏寒|畏寒||明显|怕冷
肌肉酸痛|疼痛|肌肉|全身,明显|浑身酸疼
"""

# standard name | aliases | body part | department | symptoms | drugs | examinations
_DISEASES = """
急性上呼吸道感染|感冒,上感|咽喉|呼吸内科|发热,流涕,鼻塞,咽痛|对乙酰氨基酚,连花清瘟胶囊|血常规
流行性感冒|流感|呼吸道|呼吸内科|发热,肌肉酸痛,乏力,咳嗽|奥司他韦,对乙酰氨基酚|流感病毒抗原检测,血常规
急性支气管炎|支气管炎|支气管|呼吸内科|咳嗽,咳痰,发热|氨溴索,阿莫西林|胸部X线,血常规
社区获得性肺炎|肺炎,肺部感染|肺|呼吸内科|发热,咳嗽,咳痰,胸痛|头孢曲松,阿奇霉素|胸部CT,血常规
支气管哮喘|哮喘|支气管|呼吸内科|呼吸困难,胸闷,咳嗽|沙丁胺醇,布地奈德|肺功能
慢性阻塞性肺疾病|慢阻肺,老慢支|肺|呼吸内科|咳嗽,咳痰,气促|噻托溴铵,沙美特罗替卡松|肺功能,胸部CT
肺结核|肺痨,结核病|肺|感染科|咳嗽,咯血,盗汗,消瘦|异烟肼,利福平|胸部CT,痰涂片抗酸染色
支气管扩张症|支扩|支气管|呼吸内科|咳痰,咯血,咳嗽|左氧氟沙星,氨溴索|胸部CT
急性咽炎|咽炎|咽部|耳鼻喉科|咽痛,发热,咳嗽|蒲地蓝消炎口服液,西地碘含片|血常规
急性扁桃体炎|扁桃体发炎|扁桃体|耳鼻喉科|咽痛,发热,乏力|阿莫西林,布洛芬|血常规
急性喉炎|喉炎|喉|耳鼻喉科|声音嘶哑,咳嗽,发热|布地奈德混悬液,阿莫西林|喉镜
声带息肉|声带长肉|声带|耳鼻喉科|声音嘶哑|金嗓散结丸|喉镜
过敏性鼻炎|花粉症,鼻敏感|鼻|耳鼻喉科|鼻塞,流涕,瘙痒|氯雷他定,糠酸莫米松鼻喷雾剂|过敏原检测
慢性鼻窦炎|鼻窦炎|鼻窦|耳鼻喉科|鼻塞,流涕,头痛|桉柠蒎肠溶软胶囊,克拉霉素|鼻窦CT
急性中耳炎|中耳炎|中耳|耳鼻喉科|耳痛,发热,听力下降|阿莫西林,氧氟沙星滴耳液|耳镜检查
突发性耳聋|突聋|内耳|耳鼻喉科|听力下降,耳鸣,头晕|甲泼尼龙,银杏叶提取物|纯音测听
梅尼埃病|内耳眩晕症|内耳|耳鼻喉科|头晕,耳鸣,恶心,听力下降|倍他司汀,氢氯噻嗪|纯音测听
晕动病|晕车,晕船|内耳|神经内科|头晕,恶心,呕吐|茶苯海明|前庭功能检查
原发性高血压|高血压,血压高|血管|心血管内科|头痛,头晕,心悸|氨氯地平,缬沙坦|动态血压,心电图
冠状动脉粥样硬化性心脏病|冠心病|心脏|心血管内科|胸痛,胸闷,心悸|阿司匹林,阿托伐他汀,硝酸甘油|冠脉造影,心电图
心绞痛|心口痛|心脏|心血管内科|胸痛,胸闷|硝酸甘油,美托洛尔|心电图,心肌酶
急性心肌梗死|心梗|心脏|心血管内科|胸痛,多汗,呼吸困难|阿司匹林,氯吡格雷|心电图,肌钙蛋白
心力衰竭|心衰|心脏|心血管内科|呼吸困难,水肿,乏力|呋塞米,螺内酯,沙库巴曲缬沙坦|心脏彩超,脑钠肽
心房颤动|房颤|心脏|心血管内科|心悸,胸闷,乏力|胺碘酮,华法林|心电图,动态心电图
病毒性心肌炎|心肌炎|心肌|心血管内科|心悸,胸痛,乏力|辅酶Q10,维生素C|心肌酶,心电图
低血压|血压低|血管|心血管内科|头晕,乏力|生脉饮|动态血压
高脂血症|血脂高,高血脂|血管|心血管内科|头晕,乏力|阿托伐他汀,非诺贝特|血脂
胃食管反流病|反流性食管炎,反流病|食管|消化内科|反酸,烧心,胸痛|奥美拉唑,莫沙必利|胃镜
慢性胃炎|胃炎|胃|消化内科|腹痛,腹胀,恶心|铝碳酸镁,雷贝拉唑|胃镜,幽门螺杆菌检测
急性胃肠炎|肠胃炎,胃肠炎|胃肠|消化内科|腹痛,腹泻,呕吐,发热|蒙脱石散,口服补液盐|便常规,血常规
消化性溃疡|胃溃疡,溃疡病|胃|消化内科|腹痛,反酸,黑便|奥美拉唑,枸橼酸铋钾|胃镜,幽门螺杆菌检测
幽门螺杆菌感染|幽门螺旋杆菌,HP感染|胃|消化内科|腹胀,口臭,反酸|阿莫西林,克拉霉素,枸橼酸铋钾|碳13呼气试验
功能性消化不良|消化不良|胃|消化内科|腹胀,食欲减退,恶心|多潘立酮,复方消化酶|胃镜
肠易激综合征|肠易激|肠道|消化内科|腹痛,腹泻,便秘|匹维溴铵,双歧杆菌|肠镜
功能性便秘|习惯性便秘,便秘症|肠道|消化内科|便秘,腹胀|乳果糖,聚乙二醇|肠镜
溃疡性结肠炎|结肠炎|结肠|消化内科|腹泻,便血,腹痛|美沙拉嗪,泼尼松|肠镜
急性胰腺炎|胰腺炎|胰腺|消化内科|腹痛,呕吐,发热|生长抑素,奥美拉唑|血淀粉酶,腹部CT
脂肪性肝病|脂肪肝|肝|消化内科|乏力,腹胀|多烯磷脂酰胆碱|腹部B超,肝功能
肝硬化|肝硬变|肝|消化内科|乏力,腹胀,黄疸,水肿|螺内酯,呋塞米|腹部B超,肝功能
病毒性肝炎|肝炎|肝|感染科|乏力,食欲减退,黄疸|恩替卡韦,甘草酸二铵|肝功能,乙肝五项
急性阑尾炎|阑尾炎,盲肠炎|阑尾|普外科|腹痛,发热,恶心|头孢呋辛,甲硝唑|腹部B超,血常规
急性胆囊炎|胆囊炎|胆囊|普外科|腹痛,发热,恶心|头孢哌酮,消炎利胆片|腹部B超
胆石症|胆结石|胆囊|普外科|腹痛,腹胀,恶心|熊去氧胆酸|腹部B超
肠梗阻|肠堵|肠道|普外科|腹痛,呕吐,腹胀,便秘|生长抑素|腹部X线
痔|痔疮|肛门|普外科|便血,便秘|马应龙麝香痔疮膏,地奥司明|肛门指检
肛裂|肛门裂|肛门|普外科|便血,便秘|复方角菜酸酯栓|肛门指检
2型糖尿病|糖尿病,消渴症|胰岛|内分泌科|多饮,多尿,消瘦,乏力|二甲双胍,格列美脲,胰岛素|血糖,糖化血红蛋白
甲状腺功能亢进症|甲亢|甲状腺|内分泌科|心悸,多汗,消瘦,失眠|甲巯咪唑,丙硫氧嘧啶|甲状腺功能,甲状腺B超
甲状腺功能减退症|甲减|甲状腺|内分泌科|乏力,畏寒,水肿|左甲状腺素钠|甲状腺功能
低血糖症|低血糖|血液|内分泌科|心悸,多汗,头晕|葡萄糖|血糖
低钾血症|低钾|血液|内分泌科|乏力,心悸|氯化钾缓释片|电解质
痛风|痛风性关节炎,高尿酸|关节|风湿免疫科|关节痛,关节肿胀,红肿|秋水仙碱,非布司他,别嘌醇|尿酸
类风湿关节炎|类风湿|关节|风湿免疫科|关节痛,关节肿胀,晨僵|甲氨蝶呤,来氟米特|类风湿因子,血沉
系统性红斑狼疮|红斑狼疮,狼疮|皮肤|风湿免疫科|皮疹,关节痛,发热|羟氯喹,泼尼松|抗核抗体
强直性脊柱炎|强直,竹节样脊柱|脊柱|风湿免疫科|腰痛,晨僵|柳氮磺吡啶,塞来昔布|骶髂关节CT,HLA-B27
骨质疏松症|骨质疏松,骨头变脆|骨骼|骨科|腰痛,乏力|阿仑膦酸钠,碳酸钙D3|骨密度
膝骨关节炎|骨关节炎,膝关节退变|膝关节|骨科|关节痛,关节肿胀|氨基葡萄糖,塞来昔布|膝关节X线
腰椎间盘突出症|腰突,腰椎间盘突出|腰椎|骨科|腰痛,肢体麻木|塞来昔布,甲钴胺|腰椎磁共振
颈椎病|颈椎骨质增生|颈椎|骨科|颈部疼痛,头晕,肢体麻木|甲钴胺,洛索洛芬|颈椎X线
肩关节周围炎|肩周炎,五十肩|肩关节|骨科|关节痛|双氯芬酸二乙胺乳胶剂,塞来昔布|肩关节磁共振
急性肾小球肾炎|肾炎|肾|肾内科|血尿,水肿,头痛|氢氯噻嗪,青霉素|尿常规,肾功能
慢性肾脏病|慢性肾病,肾功能不全|肾|肾内科|水肿,乏力,食欲减退|复方α酮酸,碳酸氢钠|肾功能,尿常规
尿路感染|尿感,膀胱炎|膀胱|泌尿外科|尿频,尿急,尿痛|左氧氟沙星,三金片|尿常规,尿培养
泌尿系结石|肾结石,尿路结石|肾|泌尿外科|腰痛,血尿,恶心|坦索罗辛,排石颗粒|泌尿系B超
前列腺增生|前列腺肥大|前列腺|泌尿外科|尿频,尿急,多尿|坦索罗辛,非那雄胺|泌尿系B超,前列腺特异性抗原
慢性前列腺炎|前列腺炎|前列腺|泌尿外科|尿频,尿痛,腰痛|左氧氟沙星,前列康|前列腺液常规
缺铁性贫血|贫血,缺铁|血液|血液科|乏力,头晕,心悸|琥珀酸亚铁,维生素C|血常规,血清铁蛋白
特发性血小板减少性紫癜|血小板减少,紫癜|血液|血液科|牙龈出血,皮疹,乏力|泼尼松,重组人血小板生成素|血常规,骨髓穿刺
脑梗死|脑梗,中风|脑|神经内科|肢体麻木,头晕,口角歪斜|阿司匹林,阿托伐他汀|头颅磁共振,头颅CT
脑出血|脑溢血|脑|神经内科|头痛,呕吐,肢体麻木|甘露醇,尼莫地平|头颅CT
偏头痛|偏头疼|头部|神经内科|头痛,恶心,呕吐|布洛芬,佐米曲普坦|头颅磁共振
紧张性头痛|神经性头痛|头部|神经内科|头痛,失眠,颈部疼痛|布洛芬,乙哌立松|头颅CT
癫痫|羊癫疯,抽风|脑|神经内科|抽搐,头痛|丙戊酸钠,卡马西平|脑电图
帕金森病|震颤麻痹|脑|神经内科|震颤,乏力|多巴丝肼,普拉克索|头颅磁共振
周围性面瘫|面瘫,面神经麻痹|面部|神经内科|口角歪斜,耳痛|甲钴胺,泼尼松|肌电图
失眠症|失眠障碍|大脑|精神心理科|失眠,头晕,乏力|右佐匹克隆,艾司唑仑|睡眠监测
抑郁症|抑郁|大脑|精神心理科|情绪低落,失眠,食欲减退|舍曲林,氟西汀|心理量表评估
焦虑症|焦虑障碍|大脑|精神心理科|心悸,失眠,多汗|帕罗西汀,丁螺环酮|心理量表评估
湿疹|湿疮|皮肤|皮肤科|皮疹,瘙痒|丁酸氢化可的松乳膏,氯雷他定|皮肤镜
荨麻疹|风疹块,风团|皮肤|皮肤科|皮疹,瘙痒|西替利嗪,氯雷他定|过敏原检测
带状疱疹|缠腰龙,蛇串疮|皮肤|皮肤科|水疱,神经痛,发热|阿昔洛韦,伐昔洛韦,甲钴胺|疱疹病毒检测
单纯疱疹|热疮,唇疱疹|口唇|皮肤科|水疱,瘙痒|阿昔洛韦乳膏|疱疹病毒检测
足癣|脚气,香港脚|足部|皮肤科|瘙痒,水疱|特比萘芬乳膏,联苯苄唑|真菌镜检
银屑病|牛皮癣|皮肤|皮肤科|皮疹,瘙痒|卡泊三醇软膏,阿维A|皮肤镜
痤疮|青春痘,粉刺|面部|皮肤科|皮疹,红肿|维A酸乳膏,克林霉素凝胶|皮肤镜
接触性皮炎|皮炎|皮肤|皮肤科|皮疹,瘙痒,红肿|炉甘石洗剂,地奈德乳膏|斑贴试验
过敏性结膜炎|过敏性眼炎|结膜|眼科|眼红,瘙痒|奥洛他定滴眼液,色甘酸钠滴眼液|裂隙灯检查
急性细菌性结膜炎|红眼病|结膜|眼科|眼红,眼痛|左氧氟沙星滴眼液,妥布霉素滴眼液|裂隙灯检查
青光眼|绿内障|眼|眼科|眼痛,视物模糊,头痛|噻吗洛尔滴眼液,拉坦前列素滴眼液|眼压测定
白内障|老年性白内障|晶状体|眼科|视物模糊|吡诺克辛滴眼液|裂隙灯检查
干眼症|干眼|眼|眼科|眼干,眼红,视物模糊|玻璃酸钠滴眼液|泪液分泌试验
龋齿|蛀牙,虫牙|牙齿|口腔科|牙痛|布洛芬|口腔X线
牙周炎|牙周病|牙周|口腔科|牙龈出血,牙痛,口臭|甲硝唑,复方氯己定含漱液|口腔X线
复发性口腔溃疡|口疮|口腔|口腔科|口腔溃疡|西地碘含片,维生素B2|血常规
阴道炎|妇科炎症|阴道|妇科|白带异常,瘙痒|克霉唑阴道片,甲硝唑|白带常规
多囊卵巢综合征|多囊卵巢|卵巢|妇科|月经不调,多毛,皮疹|炔雌醇环丙孕酮,二甲双胍|妇科B超,性激素六项
子宫肌瘤|肌瘤|子宫|妇科|月经不调,腹痛,乏力|米非司酮|妇科B超
原发性痛经|痛经|子宫|妇科|腹痛,恶心|布洛芬,益母草颗粒|妇科B超
盆腔炎|盆腔炎症|盆腔|妇科|腹痛,白带异常,发热|头孢曲松,甲硝唑|妇科B超
乳腺增生|乳腺小叶增生|乳腺|乳腺外科|乳房胀痛|乳癖消片,逍遥丸|乳腺B超
小儿腹泻|婴幼儿腹泻|肠道|儿科|腹泻,呕吐,发热|蒙脱石散,口服补液盐,枯草杆菌二联活菌|便常规
手足口病|手足口|口腔|儿科|发热,皮疹,口腔溃疡|蒲地蓝消炎口服液,对乙酰氨基酚|肠道病毒检测
小儿支气管肺炎|小儿肺炎|肺|儿科|发热,咳嗽,气促|阿奇霉素,头孢克洛|胸部X线
水痘|水花|皮肤|儿科|发热,水疱,瘙痒|阿昔洛韦,炉甘石洗剂|血常规
小儿便秘|宝宝便秘|肠道|儿科|便秘,腹胀|乳果糖,枯草杆菌二联活菌|腹部B超
新生儿黄疸|宝宝黄疸|皮肤|儿科|黄疸|茵栀黄口服液,枯草杆菌二联活菌|胆红素测定
佝偻病|缺钙|骨骼|儿科|多汗,失眠|维生素D滴剂,碳酸钙|骨密度,血钙
流行性腮腺炎|腮腺炎,痄腮|腮腺|感染科|腮腺肿大,发热|利巴韦林,板蓝根颗粒|血淀粉酶
细菌性痢疾|痢疾,菌痢|肠道|感染科|腹泻,腹痛,发热,便血|左氧氟沙星,小檗碱|便常规
诺如病毒感染|诺如|胃肠|感染科|呕吐,腹泻,恶心|口服补液盐,蒙脱石散|诺如病毒检测
中暑|发痧|全身|急诊科|发热,头晕,多汗,乏力|藿香正气水|电解质
"""

LAB_EXAMS = (
    "血常规,尿常规,便常规,肝功能,肾功能,血糖,糖化血红蛋白,血脂,甲状腺功能,心肌酶,肌钙蛋白,"
    "脑钠肽,尿酸,类风湿因子,血沉,抗核抗体,HLA-B27,乙肝五项,血淀粉酶,流感病毒抗原检测,"
    "痰涂片抗酸染色,过敏原检测,幽门螺杆菌检测,碳13呼气试验,血清铁蛋白,尿培养,前列腺特异性抗原,"
    "前列腺液常规,白带常规,性激素六项,肠道病毒检测,疱疹病毒检测,胆红素测定,血钙,电解质,"
    "诺如病毒检测,真菌镜检"
).split(",")
IMAGING_EXAMS = (
    "胸部X线,胸部CT,鼻窦CT,腹部B超,腹部CT,腹部X线,泌尿系B超,心脏彩超,甲状腺B超,妇科B超,"
    "乳腺B超,头颅CT,头颅磁共振,腰椎磁共振,颈椎X线,膝关节X线,肩关节磁共振,骶髂关节CT,口腔X线,"
    "冠脉造影,骨密度"
).split(",")


@dataclass(frozen=True)
class Symptom:
    """A finding: ``core`` is the CHIP-CDEE 主体词, ``site`` its 解剖部位 (may be empty)."""

    name: str
    core: str
    site: str
    descriptors: tuple[str, ...]
    colloquial: str


@dataclass(frozen=True)
class Disease:
    """One disease of the knowledge base; ``symptoms`` name entries of :data:`SYMPTOMS`."""

    name: str
    aliases: tuple[str, ...]
    site: str
    department: str
    symptoms: tuple[str, ...]
    drugs: tuple[str, ...]
    exams: tuple[str, ...]


@dataclass(frozen=True)
class KnowledgeBase:
    """The whole knowledge base, with ordered look-up tables."""

    diseases: tuple[Disease, ...]
    symptoms: dict[str, Symptom]
    drugs: tuple[str, ...]
    exams: tuple[str, ...]
    drug_indications: dict[str, tuple[str, ...]]
    departments: tuple[str, ...]

    def disease(self, name: str) -> Disease:
        for d in self.diseases:
            if d.name == name:
                return d
        raise KeyError(f"unknown disease {name!r}")

    def exam_kind(self, exam: str) -> str:
        """The CMeIE relation for a disease→exam fact: 实验室检查, 影像学检查 or 辅助检查."""
        if exam in LAB_EXAMS:
            return "实验室检查"
        if exam in IMAGING_EXAMS:
            return "影像学检查"
        return "辅助检查"

    def with_symptom(self, symptom: str) -> tuple[Disease, ...]:
        return tuple(d for d in self.diseases if symptom in d.symptoms)


def _rows(table: str, width: int) -> list[list[str]]:
    rows = []
    for lineno, line in enumerate(table.strip().splitlines(), start=1):
        cells = line.split("|")
        if len(cells) != width:
            raise ValueError(
                f"knowledge-base table line {lineno} has {len(cells)} cells, not {width}: {line}"
            )
        rows.append(cells)
    return rows


def _split(cell: str) -> tuple[str, ...]:
    return tuple(x for x in cell.split(",") if x)


def load_kb() -> KnowledgeBase:
    """Parse the tables and check their consistency (unique names, known symptoms).

    Symptoms named by a disease but missing from the symptom table get a plain entry
    (core = name, no site), so the disease table can use a few compound findings.
    """
    symptoms: dict[str, Symptom] = {}
    for name, core, site, desc, colloquial in _rows(_SYMPTOMS, 5):
        symptoms[name] = Symptom(name, core, site, _split(desc), colloquial)
    diseases: list[Disease] = []
    for name, aliases, site, dept, sym, drugs, exams in _rows(_DISEASES, 7):
        d = Disease(name, _split(aliases), site, dept, _split(sym), _split(drugs), _split(exams))
        for s in d.symptoms:
            if s not in symptoms:
                symptoms[s] = Symptom(s, s, "", (), s)
        diseases.append(d)
    names = [d.name for d in diseases]
    aliases = [a for d in diseases for a in d.aliases]
    if len(set(names)) != len(names):
        raise ValueError("duplicate disease names in the knowledge base")
    clash = sorted(set(aliases) & set(names)) + sorted({a for a in aliases if aliases.count(a) > 1})
    if clash:
        raise ValueError(f"aliases must be unique and differ from standard names: {clash}")
    drugs: list[str] = []
    exams: list[str] = []
    depts: list[str] = []
    for d in diseases:
        drugs += [x for x in d.drugs if x not in drugs]
        exams += [x for x in d.exams if x not in exams]
        if d.department not in depts:
            depts.append(d.department)
    indications = {g: tuple(d.name for d in diseases if g in d.drugs) for g in drugs}
    return KnowledgeBase(
        diseases=tuple(diseases),
        symptoms=symptoms,
        drugs=tuple(drugs),
        exams=tuple(exams),
        drug_indications=indications,
        departments=tuple(depts),
    )


def kb_source() -> str:
    """The raw tables, hashed into the build stamp so an edit triggers a rebuild."""
    return _SYMPTOMS + _DISEASES + ",".join(LAB_EXAMS) + ",".join(IMAGING_EXAMS)
